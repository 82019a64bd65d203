"""bf16 models and torch.autocast: G-effect matrices are accumulated in float32 and stay within
documented bounds (docs/scale.md) of the float32 matrix of the same weights.

Bounds are relative Frobenius errors ||A - B|| / ||B|| of the (N, G) matrix on the six tiny
families (hidden 64, 2 layers, N = 6, T = 24, random direction), measured on CPU, torch 2.13:

- bf16 ghost vs float32 ghost (same weights cast): 3.7e-3 .. 8.4e-3   -> bound 2e-2
- bf16 ghost vs bf16 loop (same dtype, same model): 1.1e-3 .. 3.0e-3  -> bound 5e-3
- float32 model under autocast(bf16), ghost vs loop: 1.2e-3 .. 3.6e-3 -> bound 6e-3

The bf16 unit roundoff is 2^-9 = 2.0e-3: the ghost and loop engines differ by about one
rounding of the bf16 forward/backward (the loop also rounds each per-instance weight gradient
to bf16, the ghost engine never forms it), while a bf16 model differs from float32 by the
accumulated rounding of the whole forward and backward.
"""
from __future__ import annotations

import copy

import pytest
import torch

import geffect.engine as engine
from geffect.engine import per_instance_dots
from geffect.testing import FAMILIES, random_batch, random_direction, tiny_causal_lm


def fro(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double().cpu(), ref.double().cpu()
    return float((a - ref).norm() / ref.norm())


def spy_autocast_in_rules(monkeypatch, device_type: str) -> list[bool]:
    """Wrap every ghost rule so that it records whether autocast is on while it runs; returns the record."""
    seen: list[bool] = []
    get_rule = engine.get_rule

    def spying_get_rule(module):
        rule = get_rule(module)
        if rule is None:
            return None

        def wrapped(*args):
            seen.append(torch.is_autocast_enabled(device_type))
            return rule(*args)

        return wrapped

    monkeypatch.setattr(engine, "get_rule", spying_get_rule)
    return seen


def setup(family: str, seed: int = 0):
    m64 = tiny_causal_lm(family, vocab_size=64, hidden=64, layers=2, dtype=torch.float64, seed=seed).eval()
    batch = random_batch(64, batch_size=6, seq_len=24, seed=seed + 1)
    direction = random_direction(m64, seed=seed + 2)
    return m64, batch, direction


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_ghost_close_to_float32(family):
    m64, batch, d = setup(family)
    m32, m16 = copy.deepcopy(m64).float(), copy.deepcopy(m64).bfloat16()
    g32 = per_instance_dots(m32, batch, d)
    g16 = per_instance_dots(m16, batch, d)
    assert g16.dtype == torch.float32  # accumulated in float32, not bf16
    assert torch.isfinite(g16).all()
    assert fro(g16, g32) < 2e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_ghost_matches_loop(family):
    m64, batch, d = setup(family)
    m16 = copy.deepcopy(m64).bfloat16()
    ghost = per_instance_dots(m16, batch, d)
    loop = per_instance_dots(m16, batch, d, engine="loop")
    assert ghost.dtype == loop.dtype == torch.float32
    assert fro(ghost, loop) < 5e-3
    # the ghost engine is no less accurate than the reference engine in the same dtype
    ref = per_instance_dots(m64, batch, d)
    assert fro(ghost, ref) < 1.5 * fro(loop, ref)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_autocast_ghost_matches_loop_and_rules_run_in_float32(family, monkeypatch):
    """Under torch.autocast the backward pass inherits the caller's autocast state; the rule
    hooks switch it off so their products stay float32."""
    m64, batch, d = setup(family)
    m32 = copy.deepcopy(m64).float()
    seen = spy_autocast_in_rules(monkeypatch, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ghost = per_instance_dots(m32, batch, d)
        loop = per_instance_dots(m32, batch, d, engine="loop")
    assert seen and not any(seen)
    assert ghost.dtype == torch.float32
    assert fro(ghost, loop) < 6e-3
    assert fro(ghost, per_instance_dots(m32, batch, d)) < 2e-2  # autocast vs plain float32


@pytest.mark.parametrize("engine_name", ["ghost", "loop"])
def test_bf16_direction_gives_the_float32_cast_result(engine_name):
    """A bf16 direction (a bf16 model's gradient) is cast layer by layer inside the engine; the
    result is the one of its exact float32 cast."""
    m64, batch, d = setup("llama")
    m16 = copy.deepcopy(m64).bfloat16()
    d16 = {n: v.bfloat16() for n, v in d.items()}
    a = per_instance_dots(m16, batch, d16, engine=engine_name)
    b = per_instance_dots(m16, batch, {n: v.float() for n, v in d16.items()}, engine=engine_name)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
