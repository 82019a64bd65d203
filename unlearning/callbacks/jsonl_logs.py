"""The trainer's log rows as they happen: :class:`JsonlLogCallback` appends them to ``<output_dir>/logs.jsonl``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from unlearning.runs.folder import append_jsonl

__all__ = ["JsonlLogCallback", "log_kind"]


def log_kind(logs: dict[str, Any]) -> str:
    """``train`` (a training log row), ``summary`` (end of training), ``eval`` or ``other``."""
    if "train_runtime" in logs:
        return "summary"
    if any(k.startswith("eval_") for k in logs):
        return "eval"
    if "loss" in logs:
        return "train"
    return "other"


class JsonlLogCallback(TrainerCallback):
    """Append every trainer log row (``on_log``) to ``output_dir/logs.jsonl``.

    Each row: ``step``, ``epoch``, ``kind`` (:func:`log_kind`) and the logged values; read it
    with ``read_jsonl(path, dedupe=("step", "kind"))``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            append_jsonl(self.path, [{"step": state.global_step, "epoch": state.epoch, "kind": log_kind(logs), **logs}])
