"""Mask selection: keep the top ``density`` fraction of weights by attribution score.

:func:`weight_mask` keeps exactly ``round(density × n)`` weights (Python's ``round``, half to
even) with the highest scores, over all tensors at once (WAGLE's global ranking, Jia et al.,
NeurIPS 2024) or per group, per tensor or per row (:data:`SCOPES`). Ties are broken by
position: tensors in the order of the ``scores`` dict (``model.named_parameters()`` order),
row-major within a tensor; the lower position wins.

The k-th largest score is found by a radix selection on the bit patterns (int32 keys for
float32, int64 for float64 scores, :func:`_float_keys`), 65,536-bin histograms of one 16-bit
digit at a time, streamed in chunks, so memory is O(number of tensors + one chunk) beyond the
output masks; no concatenated copy and no global sort.

Scores may be FSDP2 DTensors (``Shard(0)`` on a 1-D mesh, see :mod:`geffect.distributed`):
selection is then a collective call; the histograms and tie counts are summed over ranks, no
rank holds more than its own rows of the scores, and the result is the single-process mask
exactly (ties: tensor order, then rank order = row order, then index).
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

import torch
from torch import nn

from geffect.distributed import (ShardLayout, all_gather_rows, all_reduce_sum, comm_device, common_group, is_dtensor,
                                 layout, local, wrap_like)
from geffect.groups import parameter_groups
from geffect.losses import compute_dtype

logger = logging.getLogger(__name__)

__all__ = ["SCOPES", "Mask", "kept_count", "weight_mask"]

SCOPES = ("global", "layer", "tensor", "row")
_CHUNK = 1 << 22  # elements per streamed chunk (16 MiB of float32)
_FLIP = 0x7FFFFFFF
_FLIP64 = 0x7FFFFFFFFFFFFFFF
_DIGIT = 16  # bits per radix digit
_BINS = 1 << _DIGIT
_MAX_CANDIDATES = 1 << 24  # bin members collected in memory (~200 MB) before a third pass

Mask = dict[str, torch.Tensor]


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
    NaN scores raise ``ValueError``. A collective call for sharded (DTensor) scores.
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


# --------------------------------------------------------------------------- scopes
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


# --------------------------------------------------------------------------- radix top-k
class _Part(NamedTuple):
    """One scored tensor: its name, this rank's values and where they sit in the full tensor."""

    name: str
    values: torch.Tensor
    layout: ShardLayout


def _select_topk(scores: Mapping[str, torch.Tensor], names: list[str], k: int) -> Mask:
    """Top-k over the tensors ``names`` jointly, ties to the lower position.

    Radix selection on integer keys (:func:`_float_keys`: int32 for float32 scores, int64 when
    any score tensor is float64) read as 16-bit digits, most significant first
    (:func:`_radix_search`): each digit pass histograms the digit of the elements whose higher
    digits equal the prefix chosen so far and extends the prefix with the bin holding the k-th
    largest key. Then one final pass writes the sure winners (keys above the chosen bin) and

    - single process, once the chosen bin holds at most :data:`_MAX_CANDIDATES` elements:
      collects the bin's members and picks the rest by their low bits
      (:func:`_mark_winners_collect_bin`, :func:`_pick_from_bin`);
    - otherwise, after the last digit the k-th largest key K is known exactly: counts the ties
      ``key == K`` per tensor and rank and grants them in global position order
      (:func:`_mark_winners_count_ties`, :func:`_grant_ties`).

    Memory beyond the output masks: O(number of tensors + one chunk + one bin).
    """
    group = common_group(scores[n] for n in names)
    parts = [_Part(n, local(scores[n]).detach(), layout(scores[n], group)) for n in names]
    if k <= 0 or k >= _numel(scores, names):
        keep = k > 0
        return {p.name: wrap_like(torch.full(p.values.shape, keep, dtype=torch.bool, device=p.values.device),
                                  scores[p.name]) for p in parts}
    wide = any(p.values.dtype == torch.float64 for p in parts)
    device = comm_device(group, parts[0].values) if group is not None else torch.device("cpu")
    prefix, shift, need = _radix_search(parts, k, wide, group, device)
    if shift > 0:
        out, candidates = _mark_winners_collect_bin(parts, prefix, shift, wide)
        _pick_from_bin(out, parts, candidates, need)
    else:
        out, ties = _mark_winners_count_ties(parts, prefix, wide)
        _grant_ties(out, parts, ties, prefix, need, wide, group, device)
    return {p.name: wrap_like(out[p.name], scores[p.name]) for p in parts}


def _radix_search(parts: list[_Part], k: int, wide: bool, group, device: torch.device) -> tuple[int, int, int]:
    """Digit passes, most significant digit first, until the bin of the k-th largest key is known.

    Returns ``(prefix, shift, need)``: the k-th largest key has ``key >> shift == prefix``, and
    ``need`` (>= 1) members of that bin are still to keep after every larger key. ``shift`` is 0
    after the last digit; a single process stops earlier, once the bin holds at most
    :data:`_MAX_CANDIDATES` elements. Histograms are summed over ``group`` (sharded scores).
    """
    bits = 64 if wide else 32
    need, prefix, shift = k, 0, bits
    while True:
        top = shift == bits
        shift -= _DIGIT
        hist, bad = _digit_histogram(parts, prefix, shift, top, wide, device)
        hist = all_reduce_sum(hist, group).cpu()
        if int(hist[_BINS]):
            where = f"scores[{bad!r}]" if bad else "a score tensor on another rank"
            raise ValueError(f"{where} contains NaN; scores must be comparable")
        hist = hist[:_BINS]
        b, above = _find_bin(hist, need)
        need -= above  # members of bin b still to keep, >= 1
        prefix = (b - (1 << 15)) if top else (prefix << _DIGIT) | b
        if shift == 0 or (group is None and int(hist[b]) <= _MAX_CANDIDATES):
            return prefix, shift, need


def _digit_histogram(parts: list[_Part], prefix: int, shift: int, top: bool, wide: bool,
                     device: torch.device) -> tuple[torch.Tensor, str | None]:
    """This rank's histogram of the digit at ``shift`` over the keys whose higher digits equal
    ``prefix`` (all keys for the ``top`` digit): (65,537,) int64, the last entry counting NaNs
    (looked for on the top pass), and the name of the first local tensor holding a NaN."""
    hist = torch.zeros(_BINS + 1, dtype=torch.int64, device=device)  # last entry: NaN count
    bad = None
    for p in parts:
        if not p.layout.counts_here:
            continue
        for _, chunk in _chunks(p.values):
            if top:
                nan = _nan_count(chunk)
                if nan:
                    hist[_BINS] += nan
                    bad = bad or p.name
            key = _float_keys(chunk, wide)
            if not top:
                key = key[(key >> (shift + _DIGIT)) == prefix]
            hist[:_BINS] += torch.bincount(_digit(key, shift, top), minlength=_BINS).to(device)
    return hist, bad


def _mark_winners_collect_bin(parts: list[_Part], prefix: int, shift: int,
                              wide: bool) -> tuple[Mask, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Final pass of a single process: fresh masks holding ``key >> shift > prefix``, and the
    members of the chosen bin as (tensor index, flat position, remaining low bits) triples of
    1-D tensors, in position order."""
    low_bits = (1 << shift) - 1
    out: Mask = {}
    candidates = []
    for t_id, p in enumerate(parts):
        m = torch.empty(p.values.shape, dtype=torch.bool, device=p.values.device)  # allocated before temporaries
        flat_mask = m.view(-1)
        for start, chunk in _chunks(p.values):
            key = _float_keys(chunk, wide)
            head = key >> shift
            flat_mask[start:start + chunk.numel()] = head > prefix
            pos = (head == prefix).nonzero().flatten()  # (c,) increasing positions
            if pos.numel():
                candidates.append((torch.full_like(pos, t_id), pos + start, key[pos] & low_bits))
        out[p.name] = m
    return out, candidates


def _pick_from_bin(out: Mask, parts: list[_Part], candidates, need: int) -> None:
    """Mark the ``need`` bin members with the largest low bits; ties to the lower position (a
    stable descending sort of candidates listed in position order)."""
    t_ids, pos, low = (torch.cat(c) for c in zip(*candidates))
    order = torch.sort(low, descending=True, stable=True).indices[:need]  # ties: lower position
    t_ids, pos = t_ids[order], pos[order]
    for t_id, p in enumerate(parts):
        out[p.name].view(-1)[pos[t_ids == t_id]] = True


def _mark_winners_count_ties(parts: list[_Part], prefix: int, wide: bool) -> tuple[Mask, list[int]]:
    """Final pass once the k-th largest key ``prefix`` is known exactly: fresh masks holding
    ``key > prefix``, and per tensor the number of this rank's keys equal to it (0 for a
    replica this rank does not count)."""
    out: Mask = {}
    ties = []
    for p in parts:
        m = torch.empty(p.values.shape, dtype=torch.bool, device=p.values.device)  # allocated before temporaries
        flat_mask, count = m.view(-1), 0
        for start, chunk in _chunks(p.values):
            key = _float_keys(chunk, wide)
            flat_mask[start:start + chunk.numel()] = key > prefix
            count += int((key == prefix).sum())
        out[p.name] = m
        ties.append(count if p.layout.counts_here else 0)
    return out, ties


def _grant_ties(out: Mask, parts: list[_Part], ties: list[int], prefix: int, need: int, wide: bool, group,
                device: torch.device) -> None:
    """Mark ``need`` keys equal to ``prefix``, granted in global position order: tensor, then
    rank (the row order of a ``Shard(0)`` tensor), then flat index. The tie counts are gathered
    over ``group``; a last pass marks the granted ties of this rank."""
    counts = all_gather_rows(torch.tensor(ties, dtype=torch.int64, device=device), group).cpu().T  # (P, W)
    before = counts.reshape(-1).cumsum(0).reshape(counts.shape) - counts  # ties ahead in global order
    granted = (need - before).clamp(min=0).minimum(counts)  # (P, W)
    for t_id, p in enumerate(parts):
        lay = p.layout
        left = int(granted[t_id, lay.coordinate if lay.counts_here else lay.owner])
        flat_mask = out[p.name].view(-1)
        for start, chunk in _chunks(p.values):
            if left <= 0:
                break
            eq = (_float_keys(chunk, wide) == prefix).nonzero().flatten()[:left]  # lowest positions first
            flat_mask[eq + start] = True
            left -= int(eq.numel())


# --------------------------------------------------------------------------- keys and digits
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


def _chunks(t: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """(flat start, 1-D chunk) of ``t`` in row-major order, :data:`_CHUNK` elements at a time."""
    flat = t.detach().reshape(-1)
    for start in range(0, flat.numel(), _CHUNK):
        yield start, flat[start:start + _CHUNK]


def _find_bin(hist: torch.Tensor, k: int) -> tuple[int, int]:
    """Bin holding the k-th largest element (1-based), and the number of elements in higher bins."""
    above = torch.flip(hist, [0]).cumsum(0)  # above[i]: count in bins >= 65535 - i
    i = int(torch.searchsorted(above, torch.tensor(k, dtype=above.dtype)))  # first i with above[i] >= k
    b = _BINS - 1 - i
    return b, int(above[i] - hist[b])


def _nan_count(chunk: torch.Tensor) -> int:
    # one reduction; the exact count only runs when the sum is NaN (NaN or inf - inf)
    if not torch.isnan(chunk.sum()):
        return 0
    return int(torch.isnan(chunk).sum())
