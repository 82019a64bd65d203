"""Track G-effects during unlearning and append them to disk as they are computed.

Wang et al. (ICLR 2025) follow G-effects over training steps, per layer and per instance,
and also plot their cumulative sum over steps. :class:`GEffectTracker` holds fixed probe sets
(forget, retain, any named set); at each tracked step it computes, for every probe set, the
matrix ``E[i, g] = <grad_g R(x_i), d_g>`` (:func:`geffect.per_instance_dots`) for the given
direction d (the gradient the optimizer uses), and writes it immediately.

On-disk format (``output_dir/geffect/``)::

    manifest.json              probes, sizes, instance ids, groups, views, steps done (atomic)
    step_000012.parquet        G-effect rows of step 12: step, probe, instance, view, group, value
    pg_step_000012.parquet     PG-effect rows (optional): same columns, instance = unlearning instance

Each part file is written to a temporary name and moved into place with ``os.replace``, then
the manifest is rewritten the same way, so a killed run leaves only complete files; the part
files on disk are the source of truth for which steps are done, and a tracker created on an
existing directory resumes (skips those steps). ``view`` is ``"fine"`` for the fine groups and
the coarse scheme's name (e.g. ``"thirds"``) for the coarse groups; both are computed in the
same pass. Values are float32 matrices stored as float64 columns.

Beside the G-effects a tracker may keep what a later replay needs (:mod:`geffect.replay`):
``probes.pt`` (the probe batches, :meth:`GEffectTracker.save_probes`) and
``batches_step_000012.pt`` (the micro-batches a step's direction was computed from,
:meth:`GEffectTracker.write_step_batches`); both are ``torch.save`` files of plain tensors.

Processes: by default a tracker is a single-process object (in multi-process training only one
process should own it). With ``distributed=True`` every rank of the process group owns one and
calls it at the same steps: rank r computes the rows of probe instances r, r + W, ... with the
full direction (:mod:`geffect.distributed`), rank 0 gathers the rows and is the only one that
touches the disk, so the tracking work per rank falls as 1/W.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geffect.batches import concat_batches, select_rows, to_cpu
from geffect.distributed import (broadcast_object, gather_objects, is_sharded, max_over_ranks, rank_world,
                                 shard_positions, sum_across_ranks)
from geffect.io import atomic_path, atomic_write_json, atomic_write_parquet
from geffect.effect import GEffectResult, direction_norm, risk_gradient
from geffect.engine import per_instance_dots
from geffect.groups import coarse_groups, parameter_groups

logger = logging.getLogger(__name__)

__all__ = ["GEffectTracker", "GEffectRecord"]

SUBDIR = "geffect"
MANIFEST = "manifest.json"
#: part files: ``step_N`` (G-effects), ``pg_step_N`` (PG-effects), ``<table>_step_N`` (step tables)
_PART_RE = re.compile(r"^(?:(?P<table>[a-z][a-z0-9_]*)_)?step_(?P<step>\d+)\.parquet$")
_BATCHES_RE = re.compile(r"^batches_step_(?P<step>\d+)\.pt$")
PG_TABLE = "pg"
PROBES_FILE = "probes.pt"
COLUMNS = ["step", "probe", "instance", "view", "group", "value"]


def _ids_of(batch: Mapping[str, Any], n: int) -> list[Any]:
    idx = batch.get("index")
    if idx is None:
        return list(range(n))
    return [int(i) for i in (idx.tolist() if isinstance(idx, torch.Tensor) else idx)]


class GEffectRecord:
    """Read-only view of a tracker directory: ``table()``, ``summary_table()``, ``pg_table()``."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.dir = self.output_dir / SUBDIR

    @property
    def manifest(self) -> dict[str, Any]:
        path = self.dir / MANIFEST
        if not path.exists():
            return {}
        return json.loads(path.read_text())

    def _all_parts(self) -> list[tuple[str | None, int, Path]]:
        if not self.dir.exists():
            return []
        out = []
        for path in self.dir.iterdir():
            m = _PART_RE.match(path.name)
            if m:
                out.append((m.group("table"), int(m.group("step")), path))
        return sorted(out, key=lambda t: (t[0] or "", t[1]))

    def _batch_parts(self) -> list[tuple[int, Path]]:
        if not self.dir.exists():
            return []
        found = [(int(m.group("step")), path) for path in self.dir.iterdir() if (m := _BATCHES_RE.match(path.name))]
        return sorted(found)

    @property
    def batch_steps(self) -> list[int]:
        """Steps whose micro-batches are on disk (:meth:`GEffectTracker.write_step_batches`)."""
        return [s for s, _ in self._batch_parts()]

    def step_batches(self, step: int) -> list[dict[str, Any]]:
        """The micro-batches (the trainer's ``inputs`` dicts, CPU tensors) stored for ``step``."""
        path = self.dir / f"batches_step_{step:06d}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no micro-batches stored for step {step} in {self.dir} (steps: {self.batch_steps}); "
                                    "track with record_batches=True, or give the replay a batch")
        return torch.load(path, map_location="cpu", weights_only=True)["micro_batches"]

    def probes(self) -> dict[str, dict[str, torch.Tensor]]:
        """The probe batches stored by :meth:`GEffectTracker.save_probes` (CPU tensors)."""
        path = self.dir / PROBES_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no {PROBES_FILE} in {self.dir}; pass the probe sets explicitly")
        return torch.load(path, map_location="cpu", weights_only=True)

    def _parts(self, pg: bool | str) -> list[tuple[int, Path]]:
        table = PG_TABLE if pg is True else (None if pg is False else pg)
        return [(step, path) for t, step, path in self._all_parts() if t == table]

    def step_table(self, name: str):
        """A table written with :meth:`GEffectTracker.write_step_table`, all steps concatenated."""
        import pandas as pd

        parts = self._parts(name)
        if not parts:
            return pd.DataFrame()
        return pd.concat([pd.read_parquet(p) for _, p in parts], ignore_index=True)

    @property
    def step_tables(self) -> list[str]:
        """Names of the step tables on disk."""
        return sorted({t for t, _, _ in self._all_parts() if t not in (None, PG_TABLE)})

    def truncate(self, max_step: int) -> list[Path]:
        """Delete every record of steps after ``max_step`` (resume from a checkpoint at that step).

        The part files are the record of which steps are done, so removing them is enough; the
        manifest's step lists are rewritten to match. Returns the deleted files.
        """
        removed = []
        for step, path in [(step, path) for _, step, path in self._all_parts()] + self._batch_parts():
            if step > max_step:
                path.unlink()
                removed.append(path)
        manifest = self.manifest
        if removed and manifest:
            manifest["steps"], manifest["pg_steps"] = self.steps, self.pg_steps
            manifest["step_info"] = {k: v for k, v in manifest.get("step_info", {}).items() if int(k) <= max_step}
            atomic_write_json(self.dir / MANIFEST, manifest, indent=1)
        return removed

    def clear(self) -> None:
        """Delete every record (a fresh run in a folder that holds an earlier one)."""
        for _, _, path in self._all_parts():
            path.unlink()
        for _, path in self._batch_parts():
            path.unlink()
        (self.dir / PROBES_FILE).unlink(missing_ok=True)
        (self.dir / MANIFEST).unlink(missing_ok=True)

    @property
    def steps(self) -> list[int]:
        """G-effect steps on disk (sorted)."""
        return [s for s, _ in self._parts(pg=False)]

    @property
    def pg_steps(self) -> list[int]:
        return [s for s, _ in self._parts(pg=True)]

    def _read(self, pg: bool, view: str | None):
        import pandas as pd

        parts = self._parts(pg)
        if not parts:
            return pd.DataFrame({c: [] for c in COLUMNS + ["cumulative"]})
        frame = pd.concat([pd.read_parquet(p) for _, p in parts], ignore_index=True)
        if view is not None:
            frame = frame[frame["view"] == view]
        frame = frame.sort_values(["probe", "view", "group", "instance", "step"], kind="stable")
        # cumulative sum over tracked steps, per (probe, view, group, instance)
        frame["cumulative"] = frame.groupby(["probe", "view", "group", "instance"], sort=False)["value"].cumsum()
        return self._ordered(frame, ["step", "probe", "view", "_g", "instance"])

    def _ordered(self, frame, keys: list[str]):
        """Sort rows with groups in model order (embed, layer.0, ...), not alphabetically."""
        views = self.manifest.get("views", {})
        rank = {(v, g): k for v, groups in views.items() for k, g in enumerate(groups)}
        frame = frame.assign(_g=[rank.get((v, g), len(rank)) for v, g in zip(frame["view"], frame["group"])])
        return frame.sort_values(keys, kind="stable").drop(columns="_g").reset_index(drop=True)

    def table(self, view: str | None = "fine"):
        """Tidy G-effects: step, probe, instance, view, group, value, cumulative (over steps).

        ``view="fine"`` (default) keeps the fine groups, a scheme name (``"thirds"``) the coarse
        ones, ``None`` both.
        """
        return self._read(pg=False, view=view)

    def pg_table(self, view: str | None = "fine"):
        """Tidy PG-effects (instance = unlearning instance), same columns as :meth:`table`."""
        return self._read(pg=True, view=view)

    def summary_table(self, view: str | None = "fine"):
        """Per step, probe and group: the G-effect (mean over probe instances) and its cumulative sum."""
        frame = self.table(view)
        if frame.empty:
            return frame.drop(columns=["instance"], errors="ignore")
        keys = ["step", "probe", "view", "group"]
        summary = frame.groupby(keys, sort=True, as_index=False)["value"].mean()
        summary["cumulative"] = summary.groupby(["probe", "view", "group"], sort=False)["value"].cumsum()
        return self._ordered(summary, ["step", "probe", "view", "_g"])

    def totals(self):
        """Per step and probe: e = sum over fine groups of the group means (+ cumulative)."""
        s = self.summary_table("fine")
        if s.empty:
            return s
        out = s.groupby(["step", "probe"], as_index=False)["value"].sum()
        out["cumulative"] = out.groupby("probe", sort=False)["value"].cumsum()
        return out


class GEffectTracker(GEffectRecord):
    """Compute G-effects on fixed probe sets at chosen steps and append them to disk.

    ``probes`` maps a probe-set name (``"forget"``, ``"retain"``, ...) to a batch (dict of
    input_ids, attention_mask, labels; an ``index`` entry gives instance ids). ``groups``
    default to :func:`geffect.parameter_groups` of the first tracked model; ``coarse`` adds a
    coarse view (``"thirds"``, ``"attn_mlp"`` or None) computed in the same pass.

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
        *,
        groups: Mapping[str, Sequence[str]] | None = None,
        engine: str = "ghost",
        coarse: str | None = "thirds",
        distributed: bool = False,
        rows_per_pass: int | None = None,
    ) -> None:
        super().__init__(output_dir)
        if not probes:
            raise ValueError("give at least one probe set, e.g. probes={'forget': batch, 'retain': batch}")
        if rows_per_pass is not None and rows_per_pass < 1:
            raise ValueError(f"rows_per_pass must be None (all rows in one pass) or >= 1, got {rows_per_pass}")
        self.rows_per_pass = rows_per_pass
        self.probes = dict(probes)
        self.engine = engine
        self.coarse = coarse
        self.rank, self.world = rank_world() if distributed else (0, 1)
        self.writer = self.rank == 0
        self.groups = OrderedDict(groups) if groups is not None else None
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
            error, groups, done = broadcast_object((error, None if self.groups is None else dict(self.groups),
                                                    self._done_steps))
            self.groups = OrderedDict(groups) if groups is not None else None
            self._done_steps = done
        if error:
            raise ValueError(error)

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
            self.groups = parameter_groups(model)
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
            atomic_write_parquet(self.dir / f"{name}_step_{step:06d}.parquet", frame)

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
            with atomic_path(self.dir / f"batches_step_{step:06d}.pt") as tmp:
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

    def _shard(self, probe: str) -> list[int]:
        return shard_positions(len(self.instance_ids[probe]), self.rank, self.world)

    def _passes(self, model: nn.Module, rows: int) -> list[range]:
        """Row ranges of the forward/backward passes over ``rows`` local rows (see ``rows_per_pass``).

        Under FSDP2 every rank gets the largest rank's number of passes (a collective); trailing
        ranges are then empty on ranks with fewer rows.
        """
        count = 1 if not self.rows_per_pass else max(1, math.ceil(rows / self.rows_per_pass))
        if self.rows_per_pass and self.world > 1 and is_sharded(model):
            count = max_over_ranks(count)
        size = math.ceil(rows / count) if rows else 0
        return [range(min(rows, k * size), min(rows, (k + 1) * size)) for k in range(count)]

    def _local_dots(self, model: nn.Module, batches: Mapping[str, Mapping[str, torch.Tensor]], direction, groups,
                    positions: Mapping[str, Sequence[int] | None], loss: str) -> dict[str, torch.Tensor]:
        """Rows ``positions[name]`` (None: every row) of each batch, in one forward and backward
        (or ``rows_per_pass`` rows at a time).

        The probe sets' rows are concatenated (right-padded to the longest; rows are independent
        in eval mode, so each row's values do not depend on its neighbours), which halves the
        passes for forget + retain probes, and under FSDP2 the parameter and direction gathers.
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
        for rows in self._passes(model, total):
            if len(rows):
                chunk = merged if len(rows) == total else select_rows(merged, list(rows))
                parts.append(per_instance_dots(model, chunk, direction, loss=loss, groups=groups, engine=self.engine))
            elif sharded:  # an FSDP2 forward is a collective: a rank out of rows runs one row and drops it
                per_instance_dots(model, select_rows(next(iter(batches.values())), [0]), direction, loss=loss,
                                  groups=groups, engine=self.engine)
        if parts:
            matrix = torch.cat(parts) if len(parts) > 1 else parts[0]
        else:  # no rows here: the (0, G) matrix, without a pass
            matrix = per_instance_dots(model, next(iter(local.values())), direction, loss=loss, groups=groups,
                                       engine=self.engine)
        matrix = matrix.float() if matrix.dtype != torch.float64 else matrix  # (sum n_r, G_all)
        out, start = {}, 0
        for k, n in sizes.items():
            out[k] = matrix[start:start + n]
            start += n
        return out

    def _gather(self, parts: Mapping[str, tuple[list[int] | None, torch.Tensor]],
                sizes: Mapping[str, int]) -> dict[str, torch.Tensor] | None:
        """Every rank's rows of every probe, assembled on rank 0 in one gather (None elsewhere).

        ``parts``: probe -> (positions, rows); positions None: the rows are this rank's own
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
        positions = {probe: self._shard(probe) if self.world > 1 else None for probe in self.probes}
        local = self._local_dots(model, self.probes, direction, all_groups, positions, "answer_nll")
        parts = {probe: (positions[probe], local[probe]) for probe in self.probes}
        matrices = self._gather(parts, {k: len(v) for k, v in self.instance_ids.items()})
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
            self._write_part(f"step_{step:06d}.parquet", rows)
            self._pending_info = {str(step): {"direction_norm": dnorm, **dict(extra or {})}}
            self._write_manifest(views)
        self.last = results
        return results

    def probe_gradient(self, model: nn.Module, probe: str) -> dict[str, torch.Tensor]:
        """grad R(D) of one probe set (eval mode); ``distributed``: each rank differentiates its
        share of the instance mean and the shares are summed, so every rank gets the whole."""
        batch = self.probes[probe]
        n = len(self.instance_ids[probe])
        sharded = is_sharded(model)
        if self.world == 1 and not self.rows_per_pass and not sharded:
            return risk_gradient(model, batch)
        positions = self._shard(probe) if self.world > 1 else list(range(n))
        total: dict[str, torch.Tensor] | None = None
        for rows in self._passes(model, len(positions)):
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
                numbered = instance_ids is not None or "index" in unlearn_batch
                gathered = gather_objects((numbered, ids))
                if gathered is not None:
                    ids = [i for _, part in gathered for i in part]
                    if not all(flag for flag, _ in gathered):  # positions repeat across ranks: number them globally
                        ids = list(range(len(ids)))
            else:
                positions = shard_positions(n, self.rank, self.world)
        all_groups = self._all_groups(views)
        n_fine = len(views["fine"])
        rows: dict[str, list] = {c: [] for c in COLUMNS}
        results: dict[str, GEffectResult] = {}
        parts, norms = {}, {}
        for probe in self.probes:
            direction = self.probe_gradient(model, probe)
            norms[probe] = direction_norm(direction)
            local = self._local_dots(model, {probe: unlearn_batch}, direction, all_groups, {probe: positions}, "logprob")
            parts[probe] = (positions, local[probe])
            del direction
        matrices = self._gather(parts, {k: n for k in self.probes})
        self._done_steps[True].add(step)
        for probe in self.probes:
            if not self.writer:
                continue
            matrix, dnorm = matrices[probe], norms[probe]
            for k, v in self._rows(step, probe, ids, views, matrix).items():
                rows[k] += v
            results[probe] = GEffectResult(matrix[:, :n_fine].cpu(), list(views["fine"]), ids, dnorm)
        if self.writer:
            self._write_part(f"pg_step_{step:06d}.parquet", rows)
            self._write_manifest(views)
        return results

    def _results_from_disk(self, step: int) -> dict[str, GEffectResult]:
        import pandas as pd

        frame = pd.read_parquet(self.dir / f"step_{step:06d}.parquet")
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
        record = GEffectRecord(output_dir)
        if not record.dir.exists():
            raise FileNotFoundError(f"no G-effect records in {output_dir} (expected a '{SUBDIR}/' folder)")
        return record
