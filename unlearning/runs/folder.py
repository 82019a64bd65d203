"""The run folder: every file and folder name an unlearning run writes, and its JSON-lines tables.

One place owns the layout (docs/training.md describes each file)::

    <output_dir>/
        run_config.json                 RUN_CONFIG_FILE   settings, versions, data, final metrics
        logs.jsonl                      LOGS_FILE         trainer log rows (JsonlLogCallback)
        analysis/                       ANALYSIS_DIR
            token_weights.jsonl         TOKEN_WEIGHTS_FILE          (TokenWeightCallback)
            weight_vs_likelihood.jsonl  WEIGHT_VS_LIKELIHOOD_FILE
            geffect/                    GEFFECT_DIR       the G-effect tracker's folder (geffect.tracker)
                probe_token_weights_step_*.parquet, probe_instance_weights_step_*.parquet
                                        PROBE_TOKEN_WEIGHTS / PROBE_INSTANCE_WEIGHTS step tables
        eval/                           EVAL_DIR
            history.jsonl               EVAL_HISTORY_FILE one line per evaluation during training
            step-<N>/                   eval_step_dir(N): an evaluation result folder
        checkpoint-<N>/                 CHECKPOINT_PREFIX the Trainer's checkpoints

An evaluation result folder (:class:`unlearning.evaluation.EvalResult`) holds
``summary.json`` (:data:`EVAL_SUMMARY_FILE`) and ``per_instance/<set>.<format>``
(:data:`PER_INSTANCE_DIR`).

Every table is append-only JSON lines (:func:`append_jsonl`: one ``write`` + ``flush`` per row,
main process only), so a killed run keeps what it logged. Step numbering everywhere is the
trainer's: row ``step`` = the optimizer step the gradient/weights belong to (1 = the first
update, computed at the initial weights). On resume from a checkpoint at step S,
:func:`truncate_step_tables` drops rows with ``step > S`` (they are recomputed);
:func:`read_jsonl` also keeps only the last row per key when reading.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from geffect.io import atomic_write_text, dumps
from geffect.tracker import SUBDIR as GEFFECT_DIR
from geffect.tracker import GEffectRecord

logger = logging.getLogger(__name__)

__all__ = ["ANALYSIS_DIR", "CHECKPOINT_PREFIX", "EVAL_DIR", "EVAL_HISTORY_FILE", "EVAL_SUMMARY_FILE", "GEFFECT_DIR",
           "LOGS_FILE", "PER_INSTANCE_DIR", "PROBE_INSTANCE_WEIGHTS", "PROBE_TOKEN_WEIGHTS", "REFERENCE_COPY",
           "RUN_CONFIG_FILE", "RunFolder", "TOKEN_WEIGHTS_FILE", "WEIGHT_VS_LIKELIHOOD_FILE", "append_jsonl",
           "checkpoint_step", "clear_step_tables", "read_jsonl", "truncate_step_tables"]

RUN_CONFIG_FILE = "run_config.json"
LOGS_FILE = "logs.jsonl"
ANALYSIS_DIR = "analysis"
TOKEN_WEIGHTS_FILE = "token_weights.jsonl"
WEIGHT_VS_LIKELIHOOD_FILE = "weight_vs_likelihood.jsonl"
#: step tables the G-effect callback stores beside the G-effects (``GEffectRecord.step_table``)
PROBE_TOKEN_WEIGHTS = "probe_token_weights"
PROBE_INSTANCE_WEIGHTS = "probe_instance_weights"
EVAL_DIR = "eval"
EVAL_HISTORY_FILE = "history.jsonl"
EVAL_SUMMARY_FILE = "summary.json"
PER_INSTANCE_DIR = "per_instance"
CHECKPOINT_PREFIX = PREFIX_CHECKPOINT_DIR  # "checkpoint": folders checkpoint-<global step>
#: how ``run_config.json`` names the default reference model (a frozen copy of the initial model)
REFERENCE_COPY = "frozen copy of the initial model"


class _Under:
    """A path under the run folder, as a class attribute of :class:`RunFolder`."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, folder: RunFolder | None, owner: type | None = None):
        return self if folder is None else folder.root.joinpath(*self.parts)


class RunFolder:
    """The paths of one run folder (see the module docstring): ``RunFolder(dir).logs``, ``.eval_history``, ..."""

    run_config = _Under(RUN_CONFIG_FILE)
    logs = _Under(LOGS_FILE)
    analysis = _Under(ANALYSIS_DIR)  # a geffect.GEffectTracker writes into its geffect/
    token_weights = _Under(ANALYSIS_DIR, TOKEN_WEIGHTS_FILE)
    weight_vs_likelihood = _Under(ANALYSIS_DIR, WEIGHT_VS_LIKELIHOOD_FILE)
    eval = _Under(EVAL_DIR)
    eval_history = _Under(EVAL_DIR, EVAL_HISTORY_FILE)

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def eval_step_dir(self, step: int) -> Path:
        """The evaluation result folder of optimizer step ``step`` (``eval/step-<N>``)."""
        return self.eval / f"step-{step}"

    def step_tables(self) -> list[Path]:
        """The JSON-lines tables that carry a ``step`` column (trainer logs, analysis, eval history)."""
        return [p for p in (self.logs, *sorted(self.analysis.rglob("*.jsonl")), self.eval_history) if p.is_file()]


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The optimizer step a checkpoint folder holds (its ``trainer_state.json``, else its name)."""
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text())["global_step"])
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])


# ---------------------------------------------------------------------------- JSON-lines tables
def append_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows as JSON lines: one write per row, flushed and fsync-free (atomic enough for logs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(dumps(row) + "\n")
            f.flush()


def read_jsonl(path: str | os.PathLike, *, dedupe: tuple[str, ...] | None = ("step",)) -> list[dict[str, Any]]:
    """Read a JSON-lines table; skip a torn last line; keep the last row per ``dedupe`` key.

    ``dedupe=None`` returns every row. Rows lacking a dedupe column are kept as they are.
    """
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s: skipping unreadable line %d (a run killed mid-write?)", path, i + 1)
    if not dedupe:
        return rows
    last: dict[Any, int] = {}
    keep = []
    for i, row in enumerate(rows):
        if all(k in row for k in dedupe):
            last[tuple(json.dumps(row[k]) for k in dedupe)] = i
    for i, row in enumerate(rows):
        if not all(k in row for k in dedupe) or last[tuple(json.dumps(row[k]) for k in dedupe)] == i:
            keep.append(row)
    return keep


def truncate_step_tables(output_dir: str | os.PathLike, max_step: int) -> list[Path]:
    """Drop every record of steps after ``max_step`` from a run folder (resume from a checkpoint).

    JSON-lines tables are rewritten without their later rows (temporary file + ``os.replace``);
    the G-effect tracker's records are truncated by the tracker itself
    (:meth:`geffect.GEffectRecord.truncate`). Returns the files changed.
    """
    folder = RunFolder(output_dir)
    changed = GEffectRecord(folder.analysis).truncate(max_step)
    for path in folder.step_tables():
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn line of a killed run
            step = row.get("step") if isinstance(row, dict) else None
            if step is None or step <= max_step:
                kept.append(line if line.endswith("\n") else line + "\n")
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(kept))
            changed.append(path)
    return changed


def clear_step_tables(output_dir: str | os.PathLike) -> None:
    """Remove the step records of a run folder (a fresh, non-resumed run in an existing folder)."""
    folder = RunFolder(output_dir)
    GEffectRecord(folder.analysis).clear()
    for path in folder.step_tables():
        path.unlink()
