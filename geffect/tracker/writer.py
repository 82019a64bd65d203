"""Tracking G-effects during a run: :class:`GEffectTracker` computes them at chosen steps and appends them to disk.

The folder it writes is described in :mod:`geffect.tracker` and read by
:class:`geffect.tracker.record.GEffectRecord` (which the tracker extends); how the rows are split
over ranks and passes is :mod:`geffect.tracker.ranks`.
"""
from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from geffect.batches import to_cpu
from geffect.distributed import gather_objects
from geffect.effect import GEffectResult, direction_norm
from geffect.groups import coarse_groups
from geffect.io import atomic_path, atomic_write_json, atomic_write_parquet
from geffect.tracker.config import GEffectConfig
from geffect.tracker.ranks import RankSplit
from geffect.tracker.record import (COLUMNS, MANIFEST, PG_TABLE, PROBES_FILE, GEffectRecord, batches_file, load,
                                    part_file)

logger = logging.getLogger(__name__)

__all__ = ["GEffectTracker"]


def _ids_of(batch: Mapping[str, Any], n: int) -> list[Any]:
    idx = batch.get("index")
    if idx is None:
        return list(range(n))
    return [int(i) for i in (idx.tolist() if isinstance(idx, torch.Tensor) else idx)]


class GEffectTracker(GEffectRecord):
    """Compute G-effects on fixed probe sets at chosen steps and append them to disk.

    ``probes`` maps a probe-set name (``"forget"``, ``"retain"``, ...) to a batch (dict of
    input_ids, attention_mask, labels; an ``index`` entry gives instance ids). The settings are
    a :class:`geffect.GEffectConfig` (``config``) or its fields as keywords: ``groups``
    (default :func:`geffect.parameter_groups` of the first tracked model), ``coarse`` (a coarse
    view, ``"thirds"``, ``"attn_mlp"`` or None, computed in the same pass), ``engine`` and
    ``rows_per_pass``; the tracker reads only these four.

    ``distributed=True`` (every rank of an initialised process group constructs one, with the
    same probes, and calls :meth:`track` / :meth:`track_instance_effect` at the same steps):
    rank r computes the rows of probe instances r, r + W, ...; rank 0 gathers them, writes and
    returns the full results, the other ranks return ``{}``. Construction is then a collective.

    ``rows_per_pass``: at most this many probe rows per forward and backward (default: all of a
    rank's rows in one pass). Rows are independent, so the values do not change (up to float
    rounding of the probe-risk gradient, which is summed over the passes); memory falls to that
    of ``rows_per_pass`` rows, for models where the whole probe set does not fit beside the
    training step. Under FSDP2 a pass is a collective, so every rank runs the largest rank's
    number of passes (a rank out of rows runs one row and drops it).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        probes: Mapping[str, Mapping[str, torch.Tensor]],
        config: GEffectConfig | None = None,
        *,
        distributed: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__(output_dir)
        if not probes:
            raise ValueError("give at least one probe set, e.g. probes={'forget': batch, 'retain': batch}")
        self.config = GEffectConfig.resolve(config, **settings)
        self.split = RankSplit(distributed=distributed, rows_per_pass=self.config.rows_per_pass)
        self.probes = dict(probes)
        self.groups = self.config.explicit_groups  # a named scheme is resolved on the first tracked model
        self.instance_ids = {k: _ids_of(b, int(b["input_ids"].shape[0])) for k, b in self.probes.items()}
        self.cumulative: dict[str, torch.Tensor] = {}  # probe -> (N, G) sum over steps tracked here
        self.last: dict[str, GEffectResult] = {}
        self._pending_info: dict[str, Any] = {}
        previous: dict[str, Any] = {}
        if self.writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            previous = self.manifest
        error = None
        if previous:
            try:
                self._check_resume(previous)
            except ValueError as err:
                error = str(err)
            if self.groups is None and previous.get("groups"):
                self.groups = OrderedDict(previous["groups"])
            logger.info("resuming G-effect tracking in %s: %d steps on disk", self.dir, len(self.steps))
        # steps on disk (rank 0's view, shared once; afterwards every rank knows what it tracked)
        self._done_steps = {False: set(self.steps if self.writer else []), True: set(self.pg_steps if self.writer else [])}
        if self.world > 1:  # every rank raises, or none; every rank uses rank 0's groups and steps
            error, groups, done = self.split.broadcast((error, None if self.groups is None else dict(self.groups),
                                                        self._done_steps))
            self.groups = OrderedDict(groups) if groups is not None else None
            self._done_steps = done
        if error:
            raise ValueError(error)

    # the settings and the rank layout, by their names of earlier versions
    engine = property(lambda self: self.config.engine)
    coarse = property(lambda self: self.config.coarse)
    rows_per_pass = property(lambda self: self.config.rows_per_pass)
    rank = property(lambda self: self.split.rank)
    world = property(lambda self: self.split.world)
    writer = property(lambda self: self.split.writer)

    # -- setup ------------------------------------------------------------------------------
    def _check_resume(self, manifest: Mapping[str, Any]) -> None:
        sizes = {k: len(v) for k, v in self.instance_ids.items()}
        if manifest.get("sizes") != sizes or manifest.get("instance_ids") != self.instance_ids:
            raise ValueError(
                f"{self.dir} holds G-effects for probes {manifest.get('sizes')}, not {sizes}; "
                "use a new output_dir or the same probe sets to resume"
            )

    def _views(self, model: nn.Module) -> "OrderedDict[str, OrderedDict[str, list[str]]]":
        if self.groups is None:
            self.groups = self.config.model_groups(model)
        views: OrderedDict[str, OrderedDict[str, list[str]]] = OrderedDict(fine=OrderedDict(self.groups))
        if self.coarse:
            views[self.coarse] = coarse_groups(self.groups, self.coarse, model=model)
        return views

    def _write_manifest(self, views: Mapping[str, Mapping[str, list[str]]]) -> None:
        manifest = {
            "format": "geffect-tracker/1",
            "probes": list(self.probes),
            "sizes": {k: len(v) for k, v in self.instance_ids.items()},
            "instance_ids": self.instance_ids,
            "engine": self.engine,
            "groups": self.groups,
            "views": {v: list(g) for v, g in views.items()},
            "coarse": self.coarse,
            "steps": self.steps,
            "pg_steps": self.pg_steps,
            "world_size": self.world,
            "step_info": {**self.manifest.get("step_info", {}), **self._pending_info},
        }
        atomic_write_json(self.dir / MANIFEST, manifest, indent=1)
        self._pending_info = {}

    def _rows(self, step: int, probe: str, ids: Sequence[Any], views, matrix: torch.Tensor) -> dict[str, list]:
        rows: dict[str, list] = {c: [] for c in COLUMNS}
        m = matrix.detach().to("cpu", torch.float64)  # (N, sum of view sizes)
        col = 0
        for view, groups in views.items():
            for g in groups:
                values = m[:, col].tolist()  # (N,)
                col += 1
                rows["step"] += [step] * len(ids)
                rows["probe"] += [probe] * len(ids)
                rows["instance"] += list(ids)
                rows["view"] += [view] * len(ids)
                rows["group"] += [g] * len(ids)
                rows["value"] += values
        return rows

    @staticmethod
    def _all_groups(views) -> "OrderedDict[str, list[str]]":
        # one pass computes every view: a parameter may appear in several columns
        return OrderedDict((f"{v}/{g}", names) for v, groups in views.items() for g, names in groups.items())

    def _write_part(self, name: str, rows: dict[str, list]) -> None:
        import pandas as pd

        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame["instance"] = frame["instance"].astype("int64") if len(frame) else frame["instance"]
        atomic_write_parquet(self.dir / name, frame)

    def write_step_table(self, step: int, name: str, frame) -> None:
        """Store a per-step table (e.g. the objective's token weights on a probe) beside the G-effects.

        One part file per step (``<name>_step_NNNNNN.parquet``), written atomically; read all
        steps back with :meth:`step_table`; :meth:`truncate` drops later steps on resume like
        the G-effect parts. Only the writing rank (rank 0) writes; other ranks return.
        """
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in (PG_TABLE, "batches"):
            raise ValueError(f"step table name {name!r} must be lower-case letters, digits and '_' "
                             f"(not {PG_TABLE!r} or 'batches')")
        if self.writer:
            atomic_write_parquet(self.dir / part_file(step, name), frame)

    def save_probes(self) -> None:
        """Store the probe batches (``probes.pt``) so that a replay can reuse exactly these sets."""
        if self.writer and not (self.dir / PROBES_FILE).exists():
            with atomic_path(self.dir / PROBES_FILE) as tmp:
                torch.save(to_cpu(self.probes), tmp)

    def write_step_batches(self, step: int, micro_batches: Sequence[Mapping[str, Any]], *,
                           per_rank: bool = True) -> None:
        """Store the micro-batches step ``step``'s direction was computed from (for a replay).

        With ``per_rank`` (and ``distributed``) each rank passes its own micro-batches and rank 0
        stores all of them in rank order (the gradient an all-reduce averages). Collective then.
        """
        batches = to_cpu(list(micro_batches))
        if self.world > 1 and per_rank:
            parts = gather_objects(batches)
            batches = [b for part in parts for b in part] if parts is not None else None
        if self.writer:
            with atomic_path(self.dir / batches_file(step)) as tmp:
                torch.save({"step": step, "world_size": self.world, "micro_batches": batches}, tmp)

    def note(self, step: int, **info: Any) -> None:
        """Add entries to the manifest's ``step_info[step]`` (e.g. timings); only rank 0 writes."""
        if not self.writer:
            return
        manifest = self.manifest
        if not manifest:
            raise RuntimeError(f"no manifest in {self.dir} yet: track step {step} first")
        manifest.setdefault("step_info", {}).setdefault(str(step), {}).update(info)
        atomic_write_json(self.dir / MANIFEST, manifest, indent=1)

    # -- tracking ---------------------------------------------------------------------------
    def _done(self, step: int, pg: bool) -> bool:
        """Whether ``step`` is on disk already (the same answer on every rank, no collective)."""
        if self.world == 1:
            return step in (self.pg_steps if pg else self.steps)
        return step in self._done_steps[pg]

    def track(
        self,
        step: int,
        model: nn.Module,
        direction: Mapping[str, torch.Tensor],
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, GEffectResult]:
        """G-effects of ``direction`` on every probe set at ``step``; rows appended to disk.

        Returns probe name -> :class:`GEffectResult` (fine groups). A step already on disk
        is skipped and its stored values are returned. ``distributed``: ``direction`` is the
        full (all-reduced) gradient on every rank; non-writing ranks return ``{}``.
        """
        views = self._views(model)
        if self._done(step, pg=False):
            logger.info("G-effect step %d already on disk; skipped", step)
            return self._results_from_disk(step) if self.writer else {}
        all_groups = self._all_groups(views)
        n_fine = len(views["fine"])
        dnorm = direction_norm(direction)
        rows: dict[str, list] = {c: [] for c in COLUMNS}
        results: dict[str, GEffectResult] = {}
        positions = {probe: self.split.shard(len(self.instance_ids[probe])) for probe in self.probes}
        local = self.split.local_dots(model, self.probes, direction, all_groups, positions, loss="answer_nll",
                                      engine=self.engine)
        parts = {probe: (positions[probe], local[probe]) for probe in self.probes}
        matrices = self.split.gather(parts, {k: len(v) for k, v in self.instance_ids.items()})
        self._done_steps[False].add(step)
        for probe in self.probes:
            if not self.writer:
                continue
            matrix = matrices[probe]
            for k, v in self._rows(step, probe, self.instance_ids[probe], views, matrix).items():
                rows[k] += v
            fine = matrix[:, :n_fine].cpu()  # (N, G)
            results[probe] = GEffectResult(fine, list(views["fine"]), self.instance_ids[probe], dnorm)
            self.cumulative[probe] = self.cumulative.get(probe, torch.zeros_like(fine)) + fine
        if self.writer:
            self._write_part(part_file(step), rows)
            self._pending_info = {str(step): {"direction_norm": dnorm, **dict(extra or {})}}
            self._write_manifest(views)
        self.last = results
        return results

    def probe_gradient(self, model: nn.Module, probe: str) -> dict[str, torch.Tensor]:
        """grad R(D) of one probe set (eval mode); ``distributed``: each rank differentiates its
        share of the instance mean and the shares are summed, so every rank gets the whole
        (:meth:`geffect.tracker.ranks.RankSplit.probe_gradient`)."""
        return self.split.probe_gradient(model, self.probes[probe], len(self.instance_ids[probe]))

    def track_instance_effect(
        self,
        step: int,
        model: nn.Module,
        unlearn_batch: Mapping[str, torch.Tensor],
        instance_ids: Sequence[Any] | None = None,
        *,
        per_rank: bool = False,
    ) -> dict[str, GEffectResult]:
        """PG-effects (Eq. 5) of each unlearning instance on every probe set, appended to disk.

        ``distributed``: with ``per_rank=False`` every rank passes the same batch (e.g. the
        forget probe) and its instances are split across ranks; with ``per_rank=True`` each
        rank passes its own instances (its share of the step's global batch) and rank 0 stores
        all of them, in rank order.
        """
        views = self._views(model)
        if self._done(step, pg=True):
            logger.info("PG-effect step %d already on disk; skipped", step)
            return {}
        n = int(unlearn_batch["input_ids"].shape[0])
        ids = list(instance_ids) if instance_ids is not None else _ids_of(unlearn_batch, n)
        positions = None
        if self.world > 1:
            if per_rank:
                ids = self.split.gather_instance_ids(ids, numbered=instance_ids is not None or "index" in unlearn_batch)
            else:
                positions = self.split.shard(n)
        all_groups = self._all_groups(views)
        n_fine = len(views["fine"])
        rows: dict[str, list] = {c: [] for c in COLUMNS}
        results: dict[str, GEffectResult] = {}
        parts, norms = {}, {}
        for probe in self.probes:
            direction = self.probe_gradient(model, probe)
            norms[probe] = direction_norm(direction)
            local = self.split.local_dots(model, {probe: unlearn_batch}, direction, all_groups, {probe: positions},
                                          loss="logprob", engine=self.engine)
            parts[probe] = (positions, local[probe])
            del direction
        matrices = self.split.gather(parts, {k: n for k in self.probes})
        self._done_steps[True].add(step)
        for probe in self.probes:
            if not self.writer:
                continue
            matrix, dnorm = matrices[probe], norms[probe]
            for k, v in self._rows(step, probe, ids, views, matrix).items():
                rows[k] += v
            results[probe] = GEffectResult(matrix[:, :n_fine].cpu(), list(views["fine"]), ids, dnorm)
        if self.writer:
            self._write_part(part_file(step, PG_TABLE), rows)
            self._write_manifest(views)
        return results

    def _results_from_disk(self, step: int) -> dict[str, GEffectResult]:
        import pandas as pd

        frame = pd.read_parquet(self.dir / part_file(step))
        frame = frame[frame["view"] == "fine"]
        out = {}
        for probe, ids in self.instance_ids.items():
            sub = frame[frame["probe"] == probe]
            wide = sub.pivot(index="instance", columns="group", values="value")
            groups = [g for g in self.groups if g in wide.columns]
            wide = wide.reindex(index=ids, columns=groups)
            out[probe] = GEffectResult(torch.tensor(wide.to_numpy(), dtype=torch.float64), groups, list(ids))
        return out

    @classmethod
    def load(cls, output_dir: str | os.PathLike) -> GEffectRecord:
        """A read-only :class:`GEffectRecord` over a tracker directory."""
        return load(output_dir)
