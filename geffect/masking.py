"""Weight masks from attribution scores: selection, storage, application and summaries.

A mask is ``{parameter name: bool tensor}`` (True = the weight is *updated*), built from the
scores of :func:`geffect.attribution.attribute_weights` as in WAGLE (Jia et al., NeurIPS
2024), where the density ρ is the fraction of weights that unlearning updates and the
ranking is global over all parameters.

Selection (:func:`weight_mask`) keeps exactly ``round(density × n)`` weights (Python's
``round``, half to even) with the highest scores. Ties are broken by position: tensors in the
order of the ``scores`` dict (``model.named_parameters()`` order), row-major within a tensor;
the lower position wins. The k-th largest score is found by a two-pass radix selection on the
float32 bit patterns (a 65,536-bin histogram of the high 16 bits, then of the low 16 bits
inside the chosen bin), streamed in chunks, so memory is O(number of tensors + one chunk)
beyond the output masks; no concatenated copy and no global sort.

Parameters absent from a mask are always trainable: :func:`apply_mask_to_gradients` and
:func:`masked_direction` leave them alone (the Wanda baseline masks Linear weights only).

Module types (:func:`module_type`, :func:`module_subtype`) are those of :mod:`geffect.groups`,
re-exported here for mask summaries.
"""
from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from geffect.effect import flat_gradient
from geffect.engine import per_instance_dots
from geffect.groups import MODULE_SUBTYPES, module_subtype, module_type, parameter_groups
from geffect.io import atomic_path, dumps

logger = logging.getLogger(__name__)

__all__ = ["MASK_FORMAT", "SCOPES", "Mask", "apply_mask_to_gradients", "check_mask", "kept_count", "load_mask",
           "mask_metadata", "mask_overlap", "mask_summary", "masked_direction", "masked_geffect", "module_subtype",
           "module_type", "save_mask", "weight_mask"]

SCOPES = ("global", "layer", "tensor", "row")
MASK_FORMAT = "geffect-weight-mask"
_CHUNK = 1 << 22  # elements per streamed chunk (16 MiB of float32)
_FLIP = 0x7FFFFFFF
_MAX_CANDIDATES = 1 << 24  # bin members collected in memory (~200 MB) before a third pass

Mask = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- selection
def kept_count(density: float, n: int) -> int:
    """Number of weights a mask of ``density`` keeps out of ``n``: ``round(density * n)``."""
    return int(round(density * n))


def weight_mask(
    scores: Mapping[str, torch.Tensor],
    density: float,
    *,
    scope: str = "global",
    groups: Mapping[str, Iterable[str]] | nn.Module | None = None,
) -> Mask:
    """Keep the top ``density`` fraction of weights by score; returns ``{name: bool tensor}``.

    scope:
        ``"global"``: one ranking over all tensors (WAGLE); exactly ``round(density·N)`` kept.
        ``"layer"``: the fraction is kept within each parameter group (``groups``: a mapping
            group -> names, or a model, whose :func:`geffect.groups.parameter_groups` is used).
            Group quotas are apportioned by largest remainder so every group keeps
            ⌊density·n_g⌋ or ⌈density·n_g⌉ and the total is still exactly round(density·N).
        ``"tensor"``: like ``"layer"`` with every tensor its own group.
        ``"row"``: every row of every tensor keeps ``round(density·n_cols)`` (Wanda's
            per-output-row rule; 1-D tensors are one row), so the total is Σ rows·that.
    Ties: lower position (dict order, then row-major index) wins, so masks are deterministic.
    NaN scores raise ``ValueError``.
    """
    if not 0.0 <= float(density) <= 1.0:
        raise ValueError(f"density is the fraction of weights updated and must be in [0, 1], got {density}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if not scores:
        raise ValueError("scores is empty")
    names = list(scores)
    if scope == "global":
        return _select_topk(scores, names, kept_count(density, _numel(scores, names)))
    if scope == "row":
        return {n: _row_topk(scores[n], density) for n in names}

    if scope == "tensor":
        parts = OrderedDict((n, [n]) for n in names)
    else:
        parts = _resolve_groups(groups, names)
    sizes = [_numel(scores, ns) for ns in parts.values()]
    quotas = _apportion(density, sizes)
    mask: Mask = {}
    for ns, k in zip(parts.values(), quotas):
        mask.update(_select_topk(scores, ns, k))
    return {n: mask[n] for n in names}


def _numel(scores: Mapping[str, torch.Tensor], names: Iterable[str]) -> int:
    return sum(int(scores[n].numel()) for n in names)


def _apportion(density: float, sizes: list[int]) -> list[int]:
    """Largest-remainder split of round(density·Σ sizes) into per-group counts."""
    total = kept_count(density, sum(sizes))
    quotas = [density * s for s in sizes]
    counts = [min(int(math.floor(q)), s) for q, s in zip(quotas, sizes)]
    order = sorted(range(len(sizes)), key=lambda g: (-(quotas[g] - math.floor(quotas[g])), g))
    left = total - sum(counts)
    while left > 0:  # one extra weight per group, largest fractional part first
        progressed = False
        for g in order:
            if left == 0:
                break
            if counts[g] < sizes[g]:
                counts[g] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    for g in reversed(order):  # only if float rounding overshot
        while left < 0 and counts[g] > 0:
            counts[g] -= 1
            left += 1
    return counts


def _resolve_groups(groups, names: list[str]) -> OrderedDict[str, list[str]]:
    if groups is None:
        raise ValueError(
            "scope='layer' needs groups: pass the model (groups=model) or "
            "groups=geffect.groups.parameter_groups(model)"
        )
    if isinstance(groups, nn.Module):
        groups = parameter_groups(groups)
    present = set(names)
    parts: OrderedDict[str, list[str]] = OrderedDict()
    seen: set[str] = set()
    for g, members in groups.items():
        ns = [n for n in members if n in present and n not in seen]
        seen.update(ns)
        if ns:
            parts[g] = ns
    rest = [n for n in names if n not in seen]
    if rest:
        logger.warning("%d scored tensors are in no group (e.g. %s); they form group 'ungrouped'",
                       len(rest), rest[0])
        parts["ungrouped"] = rest
    return parts


def _float_keys(flat: torch.Tensor) -> torch.Tensor:
    """int32 keys whose signed order equals the float32 order of ``flat`` (a 1-D chunk).

    Non-negative floats keep their bit pattern (already ordered); a negative float becomes
    minus its magnitude bits, so -0.0 and +0.0 share the key 0 and tie as they should.
    """
    bits = flat.to(torch.float32).view(torch.int32)
    if bits.numel() == 0 or int(bits.min()) >= 0:  # the usual case: |scores| >= +0.0
        return bits
    return torch.where(bits < 0, -(bits & _FLIP), bits)


def _chunks(t: torch.Tensor) -> Iterable[tuple[int, torch.Tensor]]:
    flat = t.detach().reshape(-1)
    for start in range(0, flat.numel(), _CHUNK):
        yield start, flat[start:start + _CHUNK]


def _check_nan(name: str, chunk: torch.Tensor) -> None:
    # one reduction; the exact test only runs when the sum is NaN (NaN or inf - inf)
    if torch.isnan(chunk.sum()) and bool(torch.isnan(chunk).any()):
        raise ValueError(f"scores[{name!r}] contains NaN; scores must be comparable")


def _find_bin(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th largest element (1-based), and the number of elements in higher bins."""
    above = torch.flip(hist, [0]).cumsum(0)  # above[i]: count in bins >= 65535 - i
    i = int(torch.searchsorted(above, torch.tensor(k, dtype=above.dtype)))  # first i with above[i] >= k
    b = (1 << 16) - 1 - i
    return b, int(above[i] - hist[b])


def _select_topk(scores, names: list[str], k: int) -> Mask:
    """Top-k over the tensors ``names`` jointly, ties to the lower position.

    Radix selection on int32 keys split as (high 16 bits, low 16 bits):
    pass 1 histograms the high halves and finds the bin b holding the k-th largest key;
    pass 2 writes ``high > b`` into the masks and collects the elements of bin b (position and
    low half) -- at most :data:`_MAX_CANDIDATES` of them, else it histograms their low halves
    and a third pass resolves the bin. Candidates are kept in position order, so a stable
    sort on the low half breaks ties by position.
    """
    if k <= 0:
        return {n: torch.zeros(scores[n].shape, dtype=torch.bool, device=scores[n].device) for n in names}
    if k >= _numel(scores, names):
        return {n: torch.ones(scores[n].shape, dtype=torch.bool, device=scores[n].device) for n in names}
    # pass 1: histogram of the high halves, shifted to [0, 65536) (order preserving)
    hist = torch.zeros(1 << 16, dtype=torch.int64)
    for n in names:
        for _, chunk in _chunks(scores[n]):
            _check_nan(n, chunk)
            hist += torch.bincount((_float_keys(chunk) >> 16) + (1 << 15), minlength=1 << 16).cpu()
    hi_bin, above = _find_bin(hist, k)
    need = k - above  # elements of bin hi_bin still to keep, >= 1
    collect = int(hist[hi_bin]) <= _MAX_CANDIDATES

    # pass 2: sure winners; bin members collected (or their low halves histogrammed)
    # output masks allocated up front, before any chunk temporaries (less heap fragmentation)
    out: Mask = {n: torch.empty(scores[n].shape, dtype=torch.bool, device=scores[n].device) for n in names}
    cand_tensor, cand_pos, cand_low = [], [], []
    hist.zero_()
    for t_id, n in enumerate(names):
        s, m = scores[n], out[n].view(-1)
        for start, chunk in _chunks(s):
            key = _float_keys(chunk)
            hi = (key >> 16) + (1 << 15)  # (chunk,)
            m[start:start + chunk.numel()] = hi > hi_bin
            in_bin = (hi == hi_bin).nonzero().flatten()  # (c,) increasing positions
            if in_bin.numel() == 0:
                continue
            low = key[in_bin] & 0xFFFF
            if collect:
                cand_tensor.append(torch.full_like(in_bin, t_id))
                cand_pos.append(in_bin + start)
                cand_low.append(low)
            else:
                hist += torch.bincount(low, minlength=1 << 16).cpu()

    if collect:
        low = torch.cat(cand_low)  # (c,) in position order
        order = torch.sort(low, descending=True, stable=True).indices[:need]  # ties: lower position first
        t_ids, pos = torch.cat(cand_tensor)[order], torch.cat(cand_pos)[order]
        for t_id, n in enumerate(names):
            out[n].view(-1)[pos[t_ids == t_id]] = True
        return out

    # pass 3 (large bin only): low threshold, then ties by position
    lo_bin, above2 = _find_bin(hist, need)
    thresh = ((hi_bin - (1 << 15)) << 16) | lo_bin  # the k-th largest key, as signed int32
    ties_left = need - above2
    for n in names:
        flat_mask = out[n].view(-1)
        for start, chunk in _chunks(scores[n]):
            key = _float_keys(chunk)
            sure = ((key >> 16) + (1 << 15) == hi_bin) & (key > thresh)
            if bool(sure.any()):
                flat_mask[start:start + chunk.numel()] |= sure
            if ties_left > 0:
                eq = (key == thresh).nonzero().flatten()[:ties_left]  # lowest positions first
                flat_mask[eq + start] = True
                ties_left -= int(eq.numel())
    return out


def _row_topk(s: torch.Tensor, density: float) -> torch.Tensor:
    rows = s.detach().reshape(1, -1) if s.dim() <= 1 else s.detach().reshape(s.shape[0], -1)  # (R, C)
    k = kept_count(density, rows.shape[1])
    m = torch.zeros(rows.shape, dtype=torch.bool, device=s.device)
    if k > 0:
        # stable descending sort: equal scores keep index order, so lower columns win ties
        order = torch.sort(rows.to(torch.float32), dim=1, descending=True, stable=True).indices  # (R, C)
        m.scatter_(1, order[:, :k], True)
    return m.view(s.shape)


# --------------------------------------------------------------------------- storage
def save_mask(mask: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
              metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a mask to safetensors atomically (bool stored as uint8; metadata records the format).

    ``metadata`` values that are not strings are stored as JSON (:func:`geffect.io.dumps`).
    """
    path = Path(path)
    if not mask:
        raise ValueError("refusing to save an empty mask")
    tensors = {}
    for n, m in mask.items():
        if m.dtype != torch.bool:
            raise ValueError(f"mask[{n!r}] has dtype {m.dtype}; masks are bool tensors")
        tensors[n] = m.detach().to("cpu", torch.uint8).contiguous()
    kept = sum(int(t.sum()) for t in tensors.values())
    total = sum(t.numel() for t in tensors.values())
    meta = {"format": MASK_FORMAT, "version": "1", "dtype": "bool",
            "kept": str(kept), "total": str(total)}
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else dumps(value)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_mask(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Mask:
    """Read a mask written by :func:`save_mask`; returns ``{name: bool tensor}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no mask file at {path}; create one with `python -m unlearning.attribute --output {path} ...`"
        )
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if meta.get("format") != MASK_FORMAT:
            raise ValueError(f"{path} is not a geffect weight mask (metadata format={meta.get('format')!r})")
        out = {}
        for n in f.keys():
            t = f.get_tensor(n)
            if t.dtype not in (torch.uint8, torch.bool):
                raise ValueError(f"{path}: tensor {n!r} has dtype {t.dtype}, expected uint8")
            out[n] = t.to(device=device, dtype=torch.bool)
    return out


def mask_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata stored with a mask file (format, kept, total and whatever the writer added)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return dict(f.metadata() or {})


def check_mask(mask: Mapping[str, torch.Tensor], model: nn.Module, *, strict: bool = False) -> list[str]:
    """Check mask names and shapes against ``model``; returns trainable names the mask omits.

    Raises ``ValueError`` naming unknown parameters and shape mismatches. With ``strict``,
    a trainable parameter missing from the mask is an error too (otherwise it is reported and
    stays fully trainable).
    """
    params = dict(model.named_parameters())
    unknown = [n for n in mask if n not in params]
    bad_shape = [f"{n}: mask {tuple(mask[n].shape)} vs parameter {tuple(params[n].shape)}"
                 for n in mask if n in params and mask[n].shape != params[n].shape]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} names not in the model (e.g. {unknown[:3]})")
    if bad_shape:
        problems.append(f"{len(bad_shape)} shape mismatches ({'; '.join(bad_shape[:3])})")
    missing = [n for n, p in params.items() if p.requires_grad and n not in mask]
    if strict and missing:
        problems.append(f"{len(missing)} trainable parameters not covered (e.g. {missing[:3]})")
    if problems:
        raise ValueError("mask does not match the model: " + "; ".join(problems)
                         + ". Was the mask computed for a different model or architecture?")
    if missing:
        logger.info("%d trainable parameters are not in the mask and stay fully trainable", len(missing))
    return missing


# --------------------------------------------------------------------------- application
@torch.no_grad()
def apply_mask_to_gradients(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero ``p.grad`` in place where the mask is False (call after backward/clipping, before
    ``optimizer.step()``). Non-finite gradients of masked weights become exactly 0 too.

    Parameters not in the mask are left alone. With decoupled weight decay (AdamW,
    weight_decay > 0) masked weights still shrink by lr·wd·θ per step: put them in a
    parameter group with weight_decay=0 if they must stay exactly fixed (docs/attribution.md).
    """
    for name, p in model.named_parameters():
        m = mask.get(name)
        if m is None or p.grad is None:
            continue
        if m.device != p.grad.device:
            m = m.to(p.grad.device)  # move the mask once beforehand to avoid this copy per step
        p.grad.masked_fill_(m.logical_not(), 0)


def masked_direction(direction: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``direction * mask`` per parameter (a new dict; names not in the mask unchanged)."""
    out = {}
    for n, d in direction.items():
        m = mask.get(n)
        if m is None:
            out[n] = d
            continue
        if m.shape != d.shape:
            raise ValueError(f"mask[{n!r}] shape {tuple(m.shape)} != direction shape {tuple(d.shape)}")
        out[n] = d * m.to(d.device)
    return out


# --------------------------------------------------------------------------- summaries
def mask_summary(mask: Mapping[str, torch.Tensor],
                 model_or_groups: nn.Module | Mapping[str, Iterable[str]] | None = None):
    """Kept fraction per parameter group and per module type: a pandas DataFrame.

    Columns ``view`` ("all" | "group" | "module_type"), ``name``, ``kept``, ``total``,
    ``fraction``. Groups come from :func:`geffect.groups.parameter_groups` when a model is given
    (or from the mapping given); module types are the fine ones of
    :func:`geffect.groups.module_subtype` (``attn.q``, ..., ``mlp.down``, ``norm``, ``lm_head``),
    structural when a model is given.
    """
    import pandas as pd  # heavy; only the table-returning functions need it

    model = model_or_groups if isinstance(model_or_groups, nn.Module) else None
    counts = {n: (int(m.sum()), int(m.numel())) for n, m in mask.items()}
    rows = []

    def add(view, label, names):
        kept = sum(counts[n][0] for n in names)
        total = sum(counts[n][1] for n in names)
        rows.append({"view": view, "name": label, "kept": kept, "total": total,
                     "fraction": kept / total if total else float("nan")})

    add("all", "all", list(counts))
    if model_or_groups is not None:
        if model is not None:
            groups = parameter_groups(model)
        else:
            groups = model_or_groups
        covered: set[str] = set()
        for g, members in groups.items():
            ns = [n for n in members if n in counts and n not in covered]
            covered.update(ns)
            if ns:
                add("group", g, ns)
        rest = [n for n in counts if n not in covered]
        if rest:
            add("group", "ungrouped", rest)
    by_type: dict[str, list[str]] = {}
    for n in counts:
        by_type.setdefault(module_subtype(n, model), []).append(n)
    for t in MODULE_SUBTYPES:
        if t in by_type:
            add("module_type", t, by_type[t])
    return pd.DataFrame(rows, columns=["view", "name", "kept", "total", "fraction"])


def mask_overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Jaccard index |a ∧ b| / |a ∨ b| of two masks over the same tensors (1.0 if both empty)."""
    if set(a) != set(b):
        diff = sorted(set(a) ^ set(b))
        raise ValueError(f"masks cover different tensors (e.g. {diff[:3]}); compare masks of one model")
    inter = union = 0
    for n in a:
        if a[n].shape != b[n].shape:
            raise ValueError(f"mask shapes differ for {n!r}: {tuple(a[n].shape)} vs {tuple(b[n].shape)}")
        x, y = a[n].bool(), b[n].to(a[n].device).bool()
        inter += int((x & y).sum())
        union += int((x | y).sum())
    return inter / union if union else 1.0


# --------------------------------------------------------------------------- G-effect link
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
    per-instance dots (:func:`geffect.effect.per_instance_dots`); e > 0 means one SGD step
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
