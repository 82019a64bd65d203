"""geffect.per_instance_dots: ghost (and func) engine against the per-instance reference.

Every comparison uses the shared harness in ``geffect.testing`` (``compare_engines``: fast
engine vs ``engine="loop"``, one plain backward per instance) on float64 models, so the
tolerance is a per-entry relative error of 1e-8. Each layer's rule is tested on its own
against the micro-batch reference in ``tests/geffect/rules/`` (one file per layer type).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from geffect import parameter_groups, per_instance_dots
from geffect.losses import answer_nll
from geffect.rules import register_rule
from geffect.rules.registry import _RULES
from geffect.testing import FAMILIES, compare_engines, random_batch, random_direction, tiny_causal_lm

TOL = 1e-8


@pytest.mark.parametrize(
    "family,tied", [(f, False) for f in FAMILIES] + [("llama", True), ("gpt2", True), ("qwen2", True)]
)
def test_ghost_matches_loop(family, tied):
    model = tiny_causal_lm(family, tied=tied, layers=2)
    batch = random_batch(model.config.vocab_size, batch_size=3, seed=1)
    err = compare_engines(model, batch, random_direction(model, seed=2))
    assert err < TOL


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_func_engine_matches_loop(family):
    model = tiny_causal_lm(family, layers=1)
    batch = random_batch(model.config.vocab_size, batch_size=3)
    assert compare_engines(model, batch, random_direction(model), engine="func") < TOL


def test_missing_direction_names_count_as_zero():
    model = tiny_causal_lm("phi", layers=2)
    batch = random_batch(model.config.vocab_size)
    direction = random_direction(model, drop=0.5, seed=3)
    groups = parameter_groups(model)
    assert compare_engines(model, batch, direction) < TOL
    matrix = per_instance_dots(model, batch, direction)
    for j, names in enumerate(groups.values()):
        if not any(n in direction for n in names):
            assert torch.all(matrix[:, j] == 0)
    assert torch.all(per_instance_dots(model, batch, {}) == 0)


def test_logprob_and_custom_loss_reading_padding_positions():
    model = tiny_causal_lm("llama", layers=1)
    batch = random_batch(model.config.vocab_size, batch_size=4)
    direction = random_direction(model)
    assert compare_engines(model, batch, direction, loss="logprob") < TOL

    def every_position(logits, labels):  # depends on padding positions too: (B,)
        return (logits.double().tanh() * torch.arange(logits.shape[-1], dtype=torch.float64)).sum(dim=(1, 2))

    assert compare_engines(model, batch, direction, loss=every_position) < TOL


def _state(model):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        [m.training for m in model.modules()],
    )


def _no_hooks(model):
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules()
    )


@pytest.mark.parametrize("engine", ["ghost", "loop"])
def test_model_state_untouched_and_no_hooks(engine):
    model = tiny_causal_lm("gpt2", layers=1, tied=True)
    model.train()
    model.transformer.h[0].eval()  # mixed modes must come back as they were
    for n, p in model.named_parameters():
        if "ln_1" in n:
            p.requires_grad_(False)
        elif "mlp" in n:
            p.grad = torch.randn_like(p)
    before = _state(model)
    batch = random_batch(model.config.vocab_size)
    per_instance_dots(model, batch, random_direction(model), engine=engine)
    after = _state(model)
    assert all(torch.equal(before[0][n], after[0][n]) for n in before[0])
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before[1].values(), after[1].values()))
    assert before[2:] == after[2:]
    assert _no_hooks(model)


class Exploding(nn.Linear):
    pass


def test_cleanup_after_raise_in_loss_and_in_backward_rule():
    model = tiny_causal_lm("llama", layers=1)
    before = _state(model)
    batch = random_batch(model.config.vocab_size)

    def bad_loss(logits, labels):
        raise RuntimeError("boom in loss")

    with pytest.raises(RuntimeError, match="boom in loss"):
        per_instance_dots(model, batch, random_direction(model), loss=bad_loss)
    assert _no_hooks(model) and _state(model)[2:] == before[2:]

    @register_rule(Exploding)
    def exploding_rule(layer, inputs, backprops, directions):
        raise RuntimeError("boom in rule")

    try:
        model.lm_head.__class__ = Exploding
        with pytest.raises(RuntimeError, match="boom in rule"):
            per_instance_dots(model, batch, random_direction(model))
    finally:
        model.lm_head.__class__ = nn.Linear
        del _RULES[Exploding]
    assert _no_hooks(model) and _state(model)[2:] == before[2:]
    assert all(p.grad is None for p in model.parameters())


def test_dtypes_and_shapes():
    model64 = tiny_causal_lm("mistral", layers=1)
    batch = random_batch(model64.config.vocab_size)
    direction = random_direction(model64)
    ref = per_instance_dots(model64, batch, direction)
    assert ref.dtype == torch.float64 and ref.shape == (3, len(parameter_groups(model64)))
    for dtype, tol in [(torch.float32, 1e-3), (torch.bfloat16, 0.2)]:
        model = tiny_causal_lm("mistral", layers=1, dtype=dtype)
        out = per_instance_dots(model, batch, direction)
        assert out.dtype == torch.float32
        assert float((out.double() - ref).norm() / ref.norm()) < tol
    empty = {k: v[:0] for k, v in batch.items()}
    assert per_instance_dots(model64, empty, direction).shape == (0, len(parameter_groups(model64)))


def test_errors_are_explicit():
    model = tiny_causal_lm("llama", layers=1)
    batch = random_batch(model.config.vocab_size)
    with pytest.raises(ValueError, match="not parameters"):
        per_instance_dots(model, batch, {"module.lm_head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        per_instance_dots(model, batch, {"lm_head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="engine"):
        per_instance_dots(model, batch, {}, engine="fast")
    with pytest.raises(ValueError, match="one value per instance"):
        per_instance_dots(model, batch, random_direction(model), loss=lambda lo, la: answer_nll(lo, la).sum())
    left = dict(batch, attention_mask=batch["attention_mask"].flip(1))
    with pytest.raises(ValueError, match="right-padded"):
        per_instance_dots(model, left, random_direction(model), engine="func")
