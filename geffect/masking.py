"""Weight masks from attribution scores: selection, storage, application and summaries.

A mask is ``{parameter name: bool tensor}`` (True = the weight is *updated*), built from the
scores of :func:`geffect.attribution.attribute_weights` as in WAGLE (Jia et al., NeurIPS
2024), where the density ρ is the fraction of weights that unlearning updates and the
ranking is global over all parameters.

Selection (:func:`weight_mask`) keeps exactly ``round(density × n)`` weights (Python's
``round``, half to even) with the highest scores. Ties are broken by position: tensors in the
order of the ``scores`` dict (``model.named_parameters()`` order), row-major within a tensor;
the lower position wins. The k-th largest score is found by a radix selection on the bit
patterns (int32 keys for float32, int64 for float64 scores), 65,536-bin histograms of one
16-bit digit at a time, streamed in chunks, so memory is O(number of tensors + one chunk)
beyond the output masks; no concatenated copy and no global sort.

Scores and masks may be FSDP2 DTensors (``Shard(0)`` on a 1-D mesh, see
:mod:`geffect.shards`): then selection, :func:`save_mask`, :func:`mask_summary` and
:func:`mask_overlap` are collective calls; the histograms and tie counts are summed over ranks,
no rank holds more than its own rows of the scores, and the result is the single-process mask
exactly (ties: tensor order, then rank order = row order, then index).

Parameters absent from a mask are always trainable: :func:`apply_mask_to_gradients` and
:func:`masked_direction` leave them alone (the Wanda baseline masks Linear weights only).

Module types (:func:`module_type`, :func:`module_subtype`) are those of :mod:`geffect.groups`,
re-exported here for mask summaries.
"""
from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from geffect.effect import flat_gradient
from geffect.engine import per_instance_dots
from geffect.groups import MODULE_SUBTYPES, module_subtype, module_type, parameter_groups
from geffect.io import atomic_path, dumps
from geffect.losses import compute_dtype
from geffect.shards import (all_gather_rows, all_reduce_sum, comm_device, common_group, is_dtensor, layout, local,
                            rank_in, reshard, true_counts, wrap_like)

logger = logging.getLogger(__name__)

__all__ = ["MASK_FORMAT", "SCOPES", "Mask", "apply_mask_to_gradients", "check_mask", "kept_count", "load_mask",
           "mask_metadata", "mask_overlap", "mask_summary", "masked_direction", "masked_geffect", "module_subtype",
           "module_type", "save_mask", "weight_mask"]

SCOPES = ("global", "layer", "tensor", "row")
MASK_FORMAT = "geffect-weight-mask"
_CHUNK = 1 << 22  # elements per streamed chunk (16 MiB of float32)
_FLIP = 0x7FFFFFFF
_FLIP64 = 0x7FFFFFFFFFFFFFFF
_DIGIT = 16  # bits per radix digit
_BINS = 1 << _DIGIT
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
        return {n: _row_topk(n, scores[n], density) for n in names}

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


def _float_keys(flat: torch.Tensor, wide: bool = False) -> torch.Tensor:
    """Integer keys whose signed order equals the float order of ``flat`` (a 1-D chunk).

    int32 keys from the float32 bit patterns, or (``wide``) int64 keys from the float64 ones.
    Non-negative floats keep their bit pattern (already ordered); a negative float becomes
    minus its magnitude bits, so -0.0 and +0.0 share the key 0 and tie as they should.
    """
    if wide:
        bits, flip = flat.to(torch.float64).view(torch.int64), _FLIP64
    else:
        bits, flip = flat.to(torch.float32).view(torch.int32), _FLIP
    if bits.numel() == 0 or int(bits.min()) >= 0:  # the usual case: |scores| >= +0.0
        return bits
    return torch.where(bits < 0, -(bits & flip), bits)


def _digit(key: torch.Tensor, shift: int, top: bool) -> torch.Tensor:
    """The 16-bit digit of ``key`` at ``shift`` as a bin index in [0, 65536); the top digit is
    signed, so it is offset by 2^15 to keep the order."""
    if top:
        return (key >> shift) + (1 << 15)
    return (key >> shift) & 0xFFFF


def _chunks(t: torch.Tensor) -> Iterable[tuple[int, torch.Tensor]]:
    flat = t.detach().reshape(-1)
    for start in range(0, flat.numel(), _CHUNK):
        yield start, flat[start:start + _CHUNK]


def _find_bin(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th largest element (1-based), and the number of elements in higher bins."""
    above = torch.flip(hist, [0]).cumsum(0)  # above[i]: count in bins >= 65535 - i
    i = int(torch.searchsorted(above, torch.tensor(k, dtype=above.dtype)))  # first i with above[i] >= k
    b = _BINS - 1 - i
    return b, int(above[i] - hist[b])


def _select_topk(scores, names: list[str], k: int) -> Mask:
    """Top-k over the tensors ``names`` jointly, ties to the lower position.

    Radix selection on integer keys (:func:`_float_keys`: int32 for float32 scores, int64 when
    any score tensor is float64) read as 16-bit digits, most significant first. Each digit
    pass histograms the digit of the elements whose higher digits equal the prefix chosen so
    far (65,536 bins, summed over ranks with one all-reduce when the scores are sharded
    DTensors) and extends the prefix with the bin holding the k-th largest key. Then:

    - single process, once the chosen bin holds at most :data:`_MAX_CANDIDATES` elements:
      the final pass writes ``prefix > chosen`` into the masks and collects the bin's members
      (position and remaining low bits) in position order; a stable descending sort of their
      low bits picks the rest, ties to the lower position;
    - otherwise, after the last digit the k-th largest key K is known exactly: the final pass
      writes ``key > K`` and counts the ties ``key == K`` per tensor and rank; the counts are
      gathered and the ties are granted in global position order (tensor, then rank -- the
      rank order is the row order of a ``Shard(0)`` tensor --, then flat index), and a last
      pass over the tensors that were granted ties marks them.

    Memory beyond the output masks: O(number of tensors + one chunk + one bin).
    """
    group = common_group(scores[n] for n in names)
    parts = [(n, local(scores[n]).detach(), layout(scores[n], group)) for n in names]

    def fill(value: bool) -> Mask:
        return {n: wrap_like(torch.full(v.shape, value, dtype=torch.bool, device=v.device), scores[n])
                for n, v, _ in parts}

    if k <= 0:
        return fill(False)
    if k >= _numel(scores, names):
        return fill(True)
    wide = any(v.dtype == torch.float64 for _, v, _ in parts)
    bits = 64 if wide else 32
    device = comm_device(group, parts[0][1]) if group is not None else torch.device("cpu")

    # digit passes
    need, prefix, shift = k, 0, bits
    while True:
        top = shift == bits
        shift -= _DIGIT
        hist = torch.zeros(_BINS + 1, dtype=torch.int64, device=device)  # last entry: NaN count
        bad = None
        for n, values, lay in parts:
            if not lay.counts_here:
                continue
            for _, chunk in _chunks(values):
                if top:
                    nan = _nan_count(chunk)
                    if nan:
                        hist[_BINS] += nan
                        bad = bad or n
                key = _float_keys(chunk, wide)
                if not top:
                    key = key[(key >> (shift + _DIGIT)) == prefix]
                hist[:_BINS] += torch.bincount(_digit(key, shift, top), minlength=_BINS).to(device)
        hist = all_reduce_sum(hist, group).cpu()
        if int(hist[_BINS]):
            where = f"scores[{bad!r}]" if bad else "a score tensor on another rank"
            raise ValueError(f"{where} contains NaN; scores must be comparable")
        hist = hist[:_BINS]
        b, above = _find_bin(hist, need)
        need -= above  # members of bin b still to keep, >= 1
        prefix = (b - (1 << 15)) if top else (prefix << _DIGIT) | b
        if shift == 0 or (group is None and int(hist[b]) <= _MAX_CANDIDATES):
            break

    # final pass: sure winners; members of the last bin collected (or their ties counted)
    collect = shift > 0
    low_bits = (1 << shift) - 1
    out: dict[str, torch.Tensor] = {}
    cand_tensor, cand_pos, cand_low, ties = [], [], [], []
    for t_id, (n, values, lay) in enumerate(parts):
        m = torch.empty(values.shape, dtype=torch.bool, device=values.device)  # allocated before temporaries
        flat_mask, count = m.view(-1), 0
        for start, chunk in _chunks(values):
            key = _float_keys(chunk, wide)
            head = key >> shift
            flat_mask[start:start + chunk.numel()] = head > prefix
            if collect:
                pos = (head == prefix).nonzero().flatten()  # (c,) increasing positions
                if pos.numel():
                    cand_tensor.append(torch.full_like(pos, t_id))
                    cand_pos.append(pos + start)
                    cand_low.append(key[pos] & low_bits)
            else:
                count += int((head == prefix).sum())
        out[n] = m
        ties.append(count if lay.counts_here else 0)

    if collect:
        order = torch.sort(torch.cat(cand_low), descending=True, stable=True).indices[:need]  # ties: lower position
        t_ids, pos = torch.cat(cand_tensor)[order], torch.cat(cand_pos)[order]
        for t_id, (n, _, _) in enumerate(parts):
            out[n].view(-1)[pos[t_ids == t_id]] = True
        return {n: wrap_like(out[n], scores[n]) for n, _, _ in parts}

    # ties of the exact k-th key, granted in (tensor, rank, index) order
    counts = all_gather_rows(torch.tensor(ties, dtype=torch.int64, device=device), group).cpu().T  # (P, W)
    before = counts.reshape(-1).cumsum(0).reshape(counts.shape) - counts  # ties ahead in global order
    granted = (need - before).clamp(min=0).minimum(counts)  # (P, W)
    for t_id, (n, values, lay) in enumerate(parts):
        left = int(granted[t_id, lay.coordinate if lay.counts_here else lay.owner])
        flat_mask = out[n].view(-1)
        for start, chunk in _chunks(values):
            if left <= 0:
                break
            eq = (_float_keys(chunk, wide) == prefix).nonzero().flatten()[:left]  # lowest positions first
            flat_mask[eq + start] = True
            left -= int(eq.numel())
    return {n: wrap_like(out[n], scores[n]) for n, _, _ in parts}


def _nan_count(chunk: torch.Tensor) -> int:
    # one reduction; the exact count only runs when the sum is NaN (NaN or inf - inf)
    if not torch.isnan(chunk.sum()):
        return 0
    return int(torch.isnan(chunk).sum())


def _row_topk(name: str, s: torch.Tensor, density: float) -> torch.Tensor:
    """Every row keeps round(density·n_cols) (1-D tensors are one row), ties to the lower column."""
    if s.dim() <= 1 and is_dtensor(s):  # a sharded vector: one row spread over ranks
        return _select_topk({name: s}, [name], kept_count(density, s.numel()))[name]
    values = local(s).detach()
    n_cols = s.numel() if s.dim() <= 1 else math.prod(s.shape[1:])
    rows = values.reshape(1 if s.dim() <= 1 else values.shape[0], n_cols)  # (R, C)
    k = kept_count(density, n_cols)
    m = torch.zeros(rows.shape, dtype=torch.bool, device=values.device)
    if k > 0 and rows.numel():
        # stable descending sort: equal scores keep index order, so lower columns win ties
        order = torch.sort(rows.to(compute_dtype(rows.dtype)), dim=1, descending=True, stable=True).indices  # (R, C)
        m.scatter_(1, order[:, :k], True)
    return wrap_like(m.view(values.shape), s)


# --------------------------------------------------------------------------- storage
def save_mask(mask: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
              metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a mask to safetensors atomically (bool stored as uint8; metadata records the format).

    ``metadata`` values that are not strings are stored as JSON (:func:`geffect.io.dumps`).

    Sharded masks (DTensors, from scores of an FSDP2 model) are written full-shaped: a
    **collective call** (every rank calls it with its shards); each tensor is gathered in turn
    and rank 0 streams it to the file, so no rank holds more than one full tensor at a time.
    The file is the same as a single-process one and loads at any world size
    (:func:`load_mask` with ``model=``). Every rank returns once the file is in place.
    """
    path = Path(path)
    if not mask:
        raise ValueError("refusing to save an empty mask")
    names = list(mask)
    for n in names:
        if mask[n].dtype != torch.bool:
            raise ValueError(f"mask[{n!r}] has dtype {mask[n].dtype}; masks are bool tensors")
    group = common_group(mask.values())
    kept = sum(true_counts([mask[n] for n in names]))
    total = sum(int(mask[n].numel()) for n in names)
    meta = {"format": MASK_FORMAT, "version": "1", "dtype": "bool",
            "kept": str(kept), "total": str(total)}
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else dumps(value)
    shapes = [tuple(int(d) for d in mask[n].shape) for n in names]
    gathered = (_full_uint8(mask[n]) for n in names)  # collective per sharded tensor
    if group is None:
        with atomic_path(path) as tmp:
            _write_safetensors(tmp, names, shapes, meta, gathered)
        return path
    failed: BaseException | None = None
    if rank_in(group) == 0:
        try:
            with atomic_path(path) as tmp:
                _write_safetensors(tmp, names, shapes, meta, gathered)
        except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks are released
            failed = err
    for _ in gathered:  # other ranks (and rank 0 after a failed write) still take part in every gather
        pass
    status = torch.tensor([0 if failed is None else 1], dtype=torch.int64,
                          device=comm_device(group, mask[names[0]]))
    if int(all_reduce_sum(status, group)):
        if failed is not None:
            raise failed
        raise RuntimeError(f"rank 0 failed to write the mask file {path}; see its error")
    return path


def _full_uint8(m: torch.Tensor) -> torch.Tensor:
    """The full mask as a contiguous CPU uint8 tensor (all-gathered when sharded)."""
    if is_dtensor(m):
        m = m.to(torch.uint8).full_tensor()
    return m.detach().to("cpu", torch.uint8).contiguous()


def _write_safetensors(path: Path, names: list[str], shapes: list[tuple[int, ...]], metadata: Mapping[str, str],
                       tensors: Iterable[torch.Tensor]) -> None:
    """Stream uint8 tensors into a safetensors file (8-byte little-endian header length, JSON
    header with dtype/shape/byte offsets, then the raw bytes in header order), one at a time."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for n, shape in zip(names, shapes):
        size = math.prod(shape)
        header[n] = {"dtype": "U8", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for n, shape, t in zip(names, shapes, tensors):
            if tuple(t.shape) != shape:
                raise ValueError(f"mask[{n!r}] gathered with shape {tuple(t.shape)}, expected {shape}")
            fh.write(t.numpy().tobytes())


def load_mask(path: str | os.PathLike, *, device: str | torch.device = "cpu", model: nn.Module | None = None) -> Mask:
    """Read a mask written by :func:`save_mask`; returns ``{name: bool tensor}``.

    With ``model`` given, the tensor of every parameter that is a DTensor (FSDP2) is returned
    sharded like that parameter, on its device, and only this rank's rows are read from the
    file; the file may have been written at any world size (the model's FSDP2 modules are
    resharded first, :func:`geffect.shards.reshard`). Other tensors are full, on ``device``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no mask file at {path}; create one with `python -m unlearning.attribute --output {path} ...`"
        )
    if model is not None:
        reshard(model)
    params = dict(model.named_parameters()) if model is not None else {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if meta.get("format") != MASK_FORMAT:
            raise ValueError(f"{path} is not a geffect weight mask (metadata format={meta.get('format')!r})")
        out = {}
        for n in f.keys():
            view = f.get_slice(n)
            if view.get_dtype() not in ("U8", "BOOL"):
                raise ValueError(f"{path}: tensor {n!r} has dtype {view.get_dtype()}, expected uint8")
            p = params.get(n)
            if p is not None and is_dtensor(p):
                shape = tuple(view.get_shape())
                if shape != tuple(p.shape):
                    raise ValueError(f"{path}: mask[{n!r}] has shape {shape}, parameter has {tuple(p.shape)}; "
                                     "was the mask computed for a different model?")
                lay = layout(p)
                if not lay.sharded:
                    t = view[:]
                elif lay.stop > lay.start:
                    t = view[lay.start:lay.stop]
                else:  # a trailing rank without rows
                    t = torch.empty((0, *shape[1:]), dtype=torch.uint8)
                out[n] = wrap_like(t.to(device=local(p).device, dtype=torch.bool), p)
            else:
                out[n] = f.get_tensor(n).to(device=device, dtype=torch.bool)
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
    FSDP2 (DTensor) gradients take a mask sharded like the parameter (``load_mask(path,
    model=model)``); a full mask is sliced to this rank's rows at every call.
    """
    for name, p in model.named_parameters():
        m = mask.get(name)
        if m is None or p.grad is None:
            continue
        p.grad.masked_fill_(_mask_like(m, p.grad, name).logical_not(), 0)


def _mask_like(m: torch.Tensor, t: torch.Tensor, name: str) -> torch.Tensor:
    """``m`` laid out like ``t`` (sharded like a DTensor ``t``) on ``t``'s device."""
    if tuple(m.shape) != tuple(t.shape):
        raise ValueError(f"mask[{name!r}] shape {tuple(m.shape)} != tensor shape {tuple(t.shape)}")
    if is_dtensor(t) and not is_dtensor(m):
        lay = layout(t)
        part = m[lay.start:lay.stop] if lay.sharded else m
        return wrap_like(part.to(local(t).device), t)
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
        out[n] = d if m is None else d * _mask_like(m, d, n)
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
    kept_per = true_counts(list(mask.values()))  # collective for sharded masks
    counts = {n: (k, int(m.numel())) for (n, m), k in zip(mask.items(), kept_per)}
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
    both, either = [], []
    for n in a:
        if a[n].shape != b[n].shape:
            raise ValueError(f"mask shapes differ for {n!r}: {tuple(a[n].shape)} vs {tuple(b[n].shape)}")
        x, y = a[n].bool(), _mask_like(b[n], a[n], n).bool()
        both.append(x & y)
        either.append(x | y)
    counts = true_counts(both + either)  # collective for sharded masks
    inter, union = sum(counts[:len(both)]), sum(counts[len(both):])
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
