"""How a tracker's rows are split over the ranks of a process group and over passes, and put back together.

A tracked step computes, for the probe rows (or the unlearning instances of a PG-effect), one
row of ``E[i, g]`` each (:func:`geffect.per_instance_dots`). :class:`RankSplit` decides who
computes which rows and in how many forward/backward passes:

- **ranks** (``distributed=True``): rank r takes the rows r, r + W, ... of every set
  (:func:`geffect.distributed.shard_positions`); rank 0 gathers everyone's rows
  (:meth:`RankSplit.gather`) and is the only rank that writes, so the tracking work per rank
  falls as 1/W.
- **passes** (``rows_per_pass``): at most that many rows per forward/backward. Rows are
  independent in eval mode, so the values do not change; under FSDP2 a pass is a collective,
  so every rank runs the largest rank's number of passes (a rank out of rows runs one row and
  drops it).
- **the probe-risk gradient** of a PG-effect (:meth:`RankSplit.probe_gradient`): every rank
  differentiates its share of the instance mean and the shares are summed over the ranks
  **once**: by one all-reduce after the last pass for a replicated (DDP) model, inside every
  pass for an FSDP2 model (its sharded gradient is reduced by the backward itself), never both.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from geffect.batches import concat_batches, select_rows
from geffect.distributed import (broadcast_object, gather_objects, is_sharded, max_over_ranks, rank_world,
                                 shard_positions, sum_across_ranks)
from geffect.effect import risk_gradient
from geffect.engine import per_instance_dots

__all__ = ["RankSplit"]


class RankSplit:
    """The split of one tracker's work over ranks and passes (see the module docstring)."""

    def __init__(self, *, distributed: bool = False, rows_per_pass: int | None = None) -> None:
        self.rank, self.world = rank_world() if distributed else (0, 1)
        self.rows_per_pass = rows_per_pass

    @property
    def writer(self) -> bool:
        """Whether this rank gathers and writes (rank 0)."""
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a collective when there are several ranks)."""
        return broadcast_object(obj) if self.world > 1 else obj

    def shard(self, n: int) -> list[int] | None:
        """This rank's positions among ``n`` rows (None: one rank holds every row)."""
        return shard_positions(n, self.rank, self.world) if self.world > 1 else None

    def passes(self, model: nn.Module, rows: int) -> list[range]:
        """Row ranges of the forward/backward passes over ``rows`` local rows (see ``rows_per_pass``).

        Under FSDP2 every rank gets the largest rank's number of passes (a collective); trailing
        ranges are then empty on ranks with fewer rows.
        """
        count = 1 if not self.rows_per_pass else max(1, math.ceil(rows / self.rows_per_pass))
        if self.rows_per_pass and self.world > 1 and is_sharded(model):
            count = max_over_ranks(count)
        size = math.ceil(rows / count) if rows else 0
        return [range(min(rows, k * size), min(rows, (k + 1) * size)) for k in range(count)]

    def local_dots(self, model: nn.Module, batches: Mapping[str, Mapping[str, torch.Tensor]], direction, groups,
                   positions: Mapping[str, Sequence[int] | None], *, loss: str, engine: str) -> dict[str, torch.Tensor]:
        """Rows ``positions[name]`` (None: every row) of each batch, in one forward and backward
        (or ``rows_per_pass`` rows at a time).

        The sets' rows are concatenated (right-padded to the longest; rows are independent in
        eval mode, so each row's values do not depend on its neighbours), which halves the passes
        for forget + retain probes, and under FSDP2 the parameter and direction gathers.
        Returns name -> (n_r, G_all).
        """
        local = {k: b if positions[k] is None else select_rows(b, positions[k]) for k, b in batches.items()}
        sizes = {k: int(b["input_ids"].shape[0]) for k, b in local.items()}
        nonempty = [local[k] for k in local if sizes[k]]
        if len(nonempty) > 1:
            merged = concat_batches([{k: v for k, v in b.items() if k != "index"} for b in nonempty])
        else:
            merged = nonempty[0] if nonempty else None
        total = sum(sizes.values())
        sharded = is_sharded(model)
        parts = []
        for rows in self.passes(model, total):
            if len(rows):
                chunk = merged if len(rows) == total else select_rows(merged, list(rows))
                parts.append(per_instance_dots(model, chunk, direction, loss=loss, groups=groups, engine=engine))
            elif sharded:  # an FSDP2 forward is a collective: a rank out of rows runs one row and drops it
                per_instance_dots(model, select_rows(next(iter(batches.values())), [0]), direction, loss=loss,
                                  groups=groups, engine=engine)
        if parts:
            matrix = torch.cat(parts) if len(parts) > 1 else parts[0]
        else:  # no rows here: the (0, G) matrix, without a pass
            matrix = per_instance_dots(model, next(iter(local.values())), direction, loss=loss, groups=groups,
                                       engine=engine)
        matrix = matrix.float() if matrix.dtype != torch.float64 else matrix  # (sum n_r, G_all)
        out, start = {}, 0
        for k, n in sizes.items():
            out[k] = matrix[start:start + n]
            start += n
        return out

    def gather(self, parts: Mapping[str, tuple[list[int] | None, torch.Tensor]],
               sizes: Mapping[str, int]) -> dict[str, torch.Tensor] | None:
        """Every rank's rows of every set, assembled on rank 0 in one gather (None elsewhere).

        ``parts``: name -> (positions, rows); positions None: the rows are this rank's own
        instances, concatenated in rank order.
        """
        if self.world == 1:
            return {k: m for k, (_, m) in parts.items()}
        gathered = gather_objects({k: (pos, m.detach().cpu()) for k, (pos, m) in parts.items()})
        if gathered is None:
            return None
        out = {}
        for k in parts:
            pieces = [g[k] for g in gathered]
            if all(pos is None for pos, _ in pieces):
                out[k] = torch.cat([m for _, m in pieces])
                continue
            first = pieces[0][1]
            full = torch.empty(sizes[k], first.shape[1], dtype=first.dtype)
            for pos, m in pieces:
                full[torch.tensor(pos, dtype=torch.long)] = m
            out[k] = full
        return out

    def gather_instance_ids(self, ids: list[Any], numbered: bool) -> list[Any]:
        """The ids of every rank's own instances, in rank order (rank 0; a collective).

        ``numbered``: this rank's ids are real instance ids; if any rank's are mere positions
        (they repeat across ranks), the gathered instances are numbered 0, 1, ... instead.
        """
        gathered = gather_objects((numbered, ids))
        if gathered is None:
            return ids
        out = [i for _, part in gathered for i in part]
        return out if all(flag for flag, _ in gathered) else list(range(len(out)))

    def probe_gradient(self, model: nn.Module, batch: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """grad R(D) of a probe set of ``n`` rows (eval mode), on every rank.

        Each rank differentiates its share of the instance mean, ``rows_per_pass`` rows at a
        time, and the shares are summed over the ranks exactly once (see the module docstring).
        """
        sharded = is_sharded(model)
        if self.world == 1 and not self.rows_per_pass and not sharded:
            return risk_gradient(model, batch)
        positions = self.shard(n) if self.world > 1 else list(range(n))
        total: dict[str, torch.Tensor] | None = None
        for rows in self.passes(model, len(positions)):
            idle = not len(rows)  # no rows left here: a zero contribution (a collective under FSDP2)
            chunk = select_rows(batch, [0] if idle else [positions[i] for i in rows])
            if idle and not sharded:
                continue
            # FSDP2 sums over ranks inside each pass; plain models sum once, after the last pass
            part = risk_gradient(model, chunk, total=n, sum_ranks=sharded, scale=0.0 if idle else 1.0)
            if total is None:
                total = part
            else:
                for name, g in part.items():
                    total[name] += g
        if total is None:  # plain model, no rows on this rank: zeros, then the sum over ranks
            total = risk_gradient(model, select_rows(batch, [0]), total=n, scale=0.0)
        if self.world > 1 and not sharded:
            sum_across_ranks(total)
        return total
