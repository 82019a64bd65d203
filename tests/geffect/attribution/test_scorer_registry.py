"""The scorer registry: every method is one registered file, attribute_weights dispatches through it,
and a scorer of one's own works end to end (scores, mask, files)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import geffect.attribution as attribution
from attribution_common import assert_close
from geffect.attribution import (METHODS, ScoringContext, attribute_and_save, attribute_weights, get_scorer,
                                 register_scorer, scorer_names, scorer_scope)
from geffect.attribution.registry import _SCORERS
from geffect.distributed import local, wrap_like
from geffect.masking import load_mask, weight_mask

PACKAGE = Path(attribution.__file__).resolve().parent


@pytest.fixture
def registered():
    """Names registered by a test are removed afterwards."""
    before = dict(_SCORERS)
    yield
    _SCORERS.clear()
    _SCORERS.update(before)


def test_every_method_is_a_registered_file_of_its_own():
    """A reader finds each method by its name in the tree: geffect/attribution/<method>.py registers it."""
    assert set(METHODS) <= set(scorer_names())
    for method in METHODS:
        source = (PACKAGE / f"{method}.py").read_text()
        assert f'@register_scorer("{method}"' in source, method
        assert get_scorer(method).__module__ == f"geffect.attribution.{method}"
    assert scorer_scope("wanda") == "row" and {scorer_scope(m) for m in METHODS if m != "wanda"} == {"global"}


def test_unknown_methods_and_scopes_are_explicit_errors():
    with pytest.raises(ValueError, match="unknown attribution method 'nope'.*wagle.*register_scorer"):
        get_scorer("nope")
    with pytest.raises(ValueError, match="scope must be one of"):
        register_scorer("bad", scope="block")


def test_a_scorer_of_ones_own(setup, registered, tmp_path):
    """θ · g_f with its sign (|.| of it is snip): registered by name, it goes through
    attribute_weights with the context's summed gradients and through attribute_and_save."""
    model, forget, retain, g_f, *_ = setup
    seen: list[ScoringContext] = []

    @register_scorer("signed_snip", scope="tensor")
    def signed_snip(ctx):
        seen.append(ctx)
        grads = ctx.gradient("forget")
        return {n: wrap_like(grads.pop(n).mul_(local(p).detach()), p) for n, p in ctx.params.items()}

    assert "signed_snip" in scorer_names()
    scores = attribute_weights(model, forget, method="signed_snip", seed=7)
    assert_close(scores, {n: p.detach() * g_f[n] for n, p in model.named_parameters()})
    ctx = seen[0]
    assert ctx.method == "signed_snip" and ctx.seed == 7 and ctx.reduction == "sum" and list(ctx.params) == [
        n for n, _ in model.named_parameters()]
    paths = attribute_and_save(model, forget, None, tmp_path / "mask.safetensors", method="signed_snip",
                               density=0.3, progress=False)
    record = json.loads(paths["json"].read_text())
    assert record["method"] == "signed_snip" and record["scope"] == "tensor"  # the scorer's default scope
    mask = load_mask(paths["mask"])
    expected = weight_mask(scores, 0.3, scope="tensor")
    assert set(mask) == set(expected) and all(torch.equal(mask[n], expected[n]) for n in mask)
    with pytest.raises(ValueError, match="method='signed_snip' needs forget_batches"):
        attribute_weights(model, None, method="signed_snip")
