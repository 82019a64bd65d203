"""geffect.effect: G-effect sign conventions, PG-effects, flat_gradient."""
from __future__ import annotations

import math

import pytest
import torch

from geffect import flat_gradient, gradient_effect, instance_effect, per_instance_dots
from geffect.effect import direction_norm
from geffect.engine import model_logits
from geffect.losses import answer_logprob, answer_nll
from geffect.testing import random_batch, tiny_causal_lm



def risk(model, batch):
    """R(D): instance-mean of the mean answer NLL."""
    return answer_nll(model_logits(model, batch["input_ids"], batch["attention_mask"]), batch["labels"]).mean()


@pytest.fixture(scope="module")
def setup():
    # GPT-2: LayerNorm keeps float64 end to end (HF RMSNorms compute in float32 even for
    # float64 models, which limits identities between *different* graphs to ~1e-8)
    model = tiny_causal_lm("gpt2", layers=2, tied=True).eval()
    probe = random_batch(model.config.vocab_size, batch_size=4, seed=3)
    return model, probe


def test_sign_convention_on_the_probe_set_itself(setup):
    model, probe = setup
    grad_r = flat_gradient(model, lambda m: risk(m, probe))
    sq = direction_norm(grad_r) ** 2
    assert sq > 0
    ascent = gradient_effect(model, lambda m, x, ref: -risk(m, x), probe, probe, cosine=True)
    descent = gradient_effect(model, lambda m, x, ref: risk(m, x), probe, probe, cosine=True)
    assert ascent.total == pytest.approx(-sq, rel=1e-9) and ascent.total <= 0
    assert descent.total == pytest.approx(sq, rel=1e-9)
    assert descent.cosine == pytest.approx(1.0, rel=1e-9) and ascent.cosine == pytest.approx(-1.0, rel=1e-9)
    # bookkeeping: total = mean of row sums = sum of group means
    assert descent.per_instance.shape == (4,) and descent.per_group.shape == (descent.matrix.shape[1],)
    assert float(descent.per_group.sum()) == pytest.approx(descent.total, rel=1e-12)
    assert len(descent.groups) == descent.matrix.shape[1]
    frame = descent.to_frame()
    assert len(frame) == descent.matrix.numel() and set(frame.columns) == {"instance", "group", "value"}


def test_first_order_meaning_of_the_sign(setup):
    """R after one small SGD step on the objective changes by -lr * e."""
    model, probe = setup
    forget = random_batch(model.config.vocab_size, batch_size=2, seed=9)

    def ga(m, x, ref):  # gradient ascent on the forget NLL
        return -risk(m, x)

    e = gradient_effect(model, ga, forget, probe).total
    lr = 1e-5
    d = flat_gradient(model, lambda m: ga(m, forget, None))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, g in d.items():
            params[n].sub_(lr * g)
        after_step = float(risk(model, probe))  # theta - lr d
        for n, g in d.items():
            params[n].add_(2 * lr * g)
        after_back = float(risk(model, probe))  # theta + lr d
        for n, g in d.items():
            params[n].sub_(lr * g)
    # central difference: (R(theta - lr d) - R(theta + lr d)) / 2 = -lr e + O(lr^3)
    assert (after_step - after_back) / 2 == pytest.approx(-lr * e, rel=1e-5)
    assert e < 0  # ascent on another batch of the same random model raises its risk here


def test_objective_may_return_an_object_with_loss(setup):
    model, probe = setup

    class Out:
        def __init__(self, loss):
            self.loss = loss

    a = gradient_effect(model, lambda m, x, ref: Out(risk(m, x)), probe, probe)
    b = gradient_effect(model, lambda m, x, ref: risk(m, x), probe, probe)
    assert torch.equal(a.matrix, b.matrix)


def test_pg_effect_averages_to_the_ga_g_effect(setup):
    """GA on log-likelihood: grad L_u = mean_s grad log p(s), so e = mean_s PG(s) (Eq. 5)."""
    model, probe = setup
    forget = random_batch(model.config.vocab_size, batch_size=3, seed=11)

    def mean_logprob(m, x, ref):
        return answer_logprob(model_logits(m, x["input_ids"], x["attention_mask"]), x["labels"]).mean()

    pg = instance_effect(model, forget, probe)
    e = gradient_effect(model, mean_logprob, forget, probe)
    assert pg.matrix.shape == (3, len(pg.groups))
    assert float(pg.per_instance.mean()) == pytest.approx(e.total, rel=1e-9)
    ref = per_instance_dots(model, forget, flat_gradient(model, lambda m: risk(m, probe)), loss="logprob", engine="loop")
    assert torch.allclose(pg.matrix, ref, rtol=1e-8, atol=0)


def test_flat_gradient_leaves_grad_untouched(setup):
    model, probe = setup
    assert all(p.grad is None for p in model.parameters())
    loss = risk(model, probe)
    d1 = flat_gradient(model, loss)
    d2 = flat_gradient(model, lambda m: risk(m, probe))
    assert all(p.grad is None for p in model.parameters())
    assert d1.keys() == d2.keys() and all(torch.allclose(d1[k], d2[k]) for k in d1)
    assert math.isfinite(direction_norm(d1))
    with pytest.raises(TypeError, match="scalar"):
        flat_gradient(model, lambda m: "not a loss")
