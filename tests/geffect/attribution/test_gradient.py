"""Gradient saliency (geffect/attribution/gradient.py) against |g_f| (float64), tied embeddings included."""
from __future__ import annotations

from attribution_common import assert_close, make_batches, per_instance_grad_sum, tiny_model
from geffect.attribution import attribute_weights


def test_tied_embeddings_count_both_uses():
    model = tiny_model(tie=True)
    forget = make_batches()
    g_f, _ = per_instance_grad_sum(model, forget)
    scores = attribute_weights(model, forget, method="gradient")
    assert "lm_head.weight" not in scores  # named once, under the embedding
    assert_close(scores, {n: g.abs() for n, g in g_f.items()})


def test_gradient_matches_formula(setup):
    model, forget, retain, g_f, *_ = setup
    params = dict(model.named_parameters())
    assert_close(attribute_weights(model, forget, method="gradient"), {n: g_f[n].abs() for n in params})
