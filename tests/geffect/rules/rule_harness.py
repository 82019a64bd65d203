"""The one harness every ghost-rule test uses (the layout of Opacus' ``tests/grad_samples``).

:func:`check_rule` runs a layer's rule (or, for a module without one, the forward-mode
fallback) through :func:`geffect.testing.rule_dots` and compares it with the micro-batch
reference :func:`geffect.testing.rule_reference` (each instance alone, batch size 1, plain
autograd), in float64, on random inputs, random output gradients and random directions. The
shapes come from :data:`SHAPES`: batch sizes 0 (empty), 1 and 3, inputs with no token axis,
one token and five tokens, and right padding (the output gradient is zero at padded positions,
as for a loss that ignores them, while the inputs there are arbitrary).
"""
from __future__ import annotations

import torch
from torch import nn

from geffect.rules import get_rule
from geffect.testing import relative_error, rule_dots, rule_reference

TOL = 1e-10  # float64: measured ~1e-14 for every rule
BATCH_SIZES = (0, 1, 3)
#: (batch size, tokens per instance or None for (B, d) inputs, right padding)
SHAPES = [(B, T, False) for B in BATCH_SIZES for T in (None, 1, 5)] + [(B, 5, True) for B in BATCH_SIZES[1:]]
SHAPE_IDS = [f"B{B}-T{T}{'-padded' if pad else ''}" for B, T, pad in SHAPES]


def features(B: int, T: int | None, d: int, *, seed: int = 0) -> torch.Tensor:
    """float64 standard-normal inputs: (B, d) when ``T`` is None, else (B, T, d)."""
    g = torch.Generator().manual_seed(seed)
    shape = (B, d) if T is None else (B, T, d)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def padding(B: int, T: int | None, padded: bool) -> torch.Tensor | None:
    """(B, T) bool, True at right-padded positions: instance i loses its last ``i % T`` tokens
    (instance 0 keeps all of them); None without padding."""
    if not padded or T is None:
        return None
    lengths = T - torch.arange(B) % T  # (B,)
    return torch.arange(T)[None, :] >= lengths[:, None]  # (B, T)


def check_rule(layer: nn.Module, inputs: tuple, *, pad: torch.Tensor | None = None, uses_rule: bool = True,
               names: list[str] | None = None, seed: int = 1, tol: float = TOL) -> float:
    """Assert that the layer's rule equals the micro-batch reference; returns the relative error.

    ``pad``: (B, T) positions whose output gradient is zero. ``uses_rule``: whether a registered
    rule (True) or the fallback (False) is expected to serve ``layer``. ``names``: the local
    parameter names given a direction (default: every parameter the layer owns directly).
    ``tol``: the bound on the relative error (:data:`TOL` unless the layer computes in float32).
    """
    assert (get_rule(layer) is not None) == uses_rule, f"{type(layer).__name__}: rule={get_rule(layer)}"
    g = torch.Generator().manual_seed(seed)
    own = dict(layer.named_parameters(recurse=False))
    names = list(own) if names is None else names
    directions = {n: torch.randn(own[n].shape, generator=g, dtype=torch.float64) for n in names}
    with torch.no_grad():
        out_shape = layer(*inputs).shape  # (B, ..., d_out)
    backprops = torch.randn(out_shape, generator=g, dtype=torch.float64)
    if pad is not None:
        backprops[pad] = 0.0  # (B, T, d_out): padded tokens get no gradient
    fast = rule_dots(layer, inputs, backprops, directions)
    ref = rule_reference(layer, inputs, backprops, directions)
    B = out_shape[0]
    assert set(fast) == set(ref) == set(names), (sorted(fast), sorted(ref))
    for n in names:
        assert fast[n].shape == (B,) and fast[n].dtype == torch.float64, (n, fast[n].shape, fast[n].dtype)
    if B:
        assert any(float(ref[n].abs().max()) > 0 for n in names), "the reference is all zeros: nothing was tested"
    err = relative_error(torch.stack([fast[n] for n in names], 1), torch.stack([ref[n] for n in names], 1))  # (B, P)
    assert err < tol, f"{type(layer).__name__}: relative error {err:.2e}"
    return err
