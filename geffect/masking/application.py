"""Mask application: zero the gradients of masked-out weights, mask a direction, and the masked G-effect.

A mask is ``{parameter name: bool tensor}`` (True = the weight is *updated*). Parameters
absent from a mask are always trainable: :func:`apply_mask_to_gradients` and
:func:`masked_direction` leave them alone (the Wanda baseline masks Linear weights only).
:func:`masked_geffect` links a mask to G-effects (Wang et al., ICLR 2025): the G-effect of the
update a masked optimiser step follows next to the dense one.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from geffect.distributed import is_dtensor, local, local_rows, wrap_like
from geffect.effect import flat_gradient
from geffect.engine import per_instance_dots

__all__ = ["apply_mask_to_gradients", "mask_like", "masked_direction", "masked_geffect"]


@torch.no_grad()
def apply_mask_to_gradients(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero ``p.grad`` in place where the mask is False (call after backward/clipping, before
    ``optimizer.step()``). Non-finite gradients of masked weights become exactly 0 too.

    Parameters not in the mask are left alone. With decoupled weight decay (AdamW,
    weight_decay > 0) masked weights still shrink by lr·wd·θ per step: put them in a
    parameter group with weight_decay=0 if they must stay exactly fixed (docs/attribution.md).
    FSDP2 (DTensor) gradients take a mask sharded like the parameter (``load_mask(path,
    model=model)``); a full mask is sliced to this rank's rows at every call.
    """
    for name, p in model.named_parameters():
        m = mask.get(name)
        if m is None or p.grad is None:
            continue
        p.grad.masked_fill_(mask_like(m, p.grad, name).logical_not(), 0)


def mask_like(m: torch.Tensor, t: torch.Tensor, name: str) -> torch.Tensor:
    """The mask ``m`` of parameter ``name`` laid out like ``t`` (sharded like a DTensor ``t``) on ``t``'s device.

    A full mask is sliced to this rank's rows of a sharded ``t``; a sharded mask of a plain
    ``t`` and a shape mismatch raise ``ValueError``.
    """
    if tuple(m.shape) != tuple(t.shape):
        raise ValueError(f"mask[{name!r}] shape {tuple(m.shape)} != tensor shape {tuple(t.shape)}")
    if is_dtensor(t) and not is_dtensor(m):
        return wrap_like(local_rows(m, t).to(local(t).device), t)
    if is_dtensor(m) and not is_dtensor(t):
        raise ValueError(f"mask[{name!r}] is sharded (DTensor) but the tensor it masks is not; "
                         "load the mask without model= for an unsharded model")
    if is_dtensor(m):
        return m
    return m if m.device == t.device else m.to(t.device)  # move the mask once beforehand to avoid this copy


def masked_direction(direction: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``direction * mask`` per parameter (a new dict; names not in the mask unchanged)."""
    out = {}
    for n, d in direction.items():
        m = mask.get(n)
        out[n] = d if m is None else d * mask_like(m, d, n)
    return out


def masked_geffect(
    model: nn.Module,
    objective,
    unlearn_inputs: Mapping[str, Any],
    probe_batches: Mapping[str, Mapping[str, torch.Tensor]],
    mask: Mapping[str, torch.Tensor],
    *,
    ref_model: nn.Module | None = None,
    groups=None,
    engine: str = "ghost",
):
    """G-effect of the dense versus the masked update of ``objective`` on each probe set.

    The dense direction is d = ∇L_u, the gradient of ``objective(model, unlearn_inputs,
    ref_model)`` taken in eval mode as :func:`geffect.effect.gradient_effect` does; the masked
    one is d ⊙ mask, the direction a masked optimiser step follows (before Adam's scaling).
    For each probe set D the G-effect is e = <∇R(D), d> = mean over probe instances of the
    per-instance dots (:func:`geffect.engine.per_instance_dots`); e > 0 means one SGD step
    lowers the probe risk. Returns a DataFrame with one row per probe: ``probe``, ``dense``,
    ``masked``, ``masked_over_dense`` and the mask's ``density``.
    """
    import pandas as pd  # heavy; only the table-returning functions need it

    was_training = model.training
    model.eval()
    try:
        dense = flat_gradient(model, lambda m: objective(m, unlearn_inputs, ref_model))
    finally:
        model.train(was_training)
    masked = masked_direction(dense, mask)
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(int(m.numel()) for m in mask.values())
    rows = []
    for probe, batch in probe_batches.items():
        e = [float(per_instance_dots(model, batch, d, groups=groups, engine=engine).sum(dim=1).mean())
             for d in (dense, masked)]  # (N, G) -> instance mean of the row sums
        rows.append({"probe": probe, "dense": e[0], "masked": e[1],
                     "masked_over_dense": e[1] / e[0] if e[0] != 0 else float("nan"),
                     "density": kept / total if total else float("nan")})
    return pd.DataFrame(rows, columns=["probe", "dense", "masked", "masked_over_dense", "density"])
