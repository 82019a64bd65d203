"""Reading a G-effect tracker folder: :class:`GEffectRecord` (``table()``, ``summary_table()``, ``pg_table()``).

The folder layout (``<output_dir>/geffect/``) is described in :mod:`geffect.tracker`; the
names below are its only definition. :class:`geffect.GEffectTracker` writes the folder
(:mod:`geffect.tracker.writer`) and reads it back through this class.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from geffect.io import atomic_write_json

__all__ = ["COLUMNS", "GEffectRecord", "MANIFEST", "PG_TABLE", "PROBES_FILE", "SUBDIR", "batches_file", "load",
           "part_file"]

SUBDIR = "geffect"
MANIFEST = "manifest.json"
#: part files: ``step_N`` (G-effects), ``pg_step_N`` (PG-effects), ``<table>_step_N`` (step tables)
_PART_RE = re.compile(r"^(?:(?P<table>[a-z][a-z0-9_]*)_)?step_(?P<step>\d+)\.parquet$")
_BATCHES_RE = re.compile(r"^batches_step_(?P<step>\d+)\.pt$")
PG_TABLE = "pg"
PROBES_FILE = "probes.pt"
COLUMNS = ["step", "probe", "instance", "view", "group", "value"]


def part_file(step: int, table: str | None = None) -> str:
    """The part file of ``step``: ``step_N.parquet`` (G-effects) or ``<table>_step_N.parquet``."""
    return f"step_{step:06d}.parquet" if table is None else f"{table}_step_{step:06d}.parquet"


def batches_file(step: int) -> str:
    """The file holding the micro-batches of ``step`` (for a replay)."""
    return f"batches_step_{step:06d}.pt"


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
        path = self.dir / batches_file(step)
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


def load(output_dir: str | os.PathLike) -> GEffectRecord:
    """A read-only :class:`GEffectRecord` over a tracker directory (``FileNotFoundError`` if there is none)."""
    record = GEffectRecord(output_dir)
    if not record.dir.exists():
        raise FileNotFoundError(f"no G-effect records in {output_dir} (expected a '{SUBDIR}/' folder)")
    return record
