"""Evaluate during training with any evaluation function: :class:`StepEvalCallback`.

    def evaluate(model, tokenizer, out_dir):          # writes what it wants into out_dir
        result = evaluate_muse(model, tokenizer, "embedded")
        result.save(out_dir)
        return result.summary

    trainer.add_callback(StepEvalCallback(evaluate, tokenizer, at_steps=(0, 10, 20)))

The callback owns *when* (``at_steps``, step 0 being the model before the first update, every
``every_steps``, at the end of every epoch), the evaluation mode (eval mode and no gradients
while it runs, the training mode given back) and *where* (``<output_dir>/eval/step-<N>/`` for
the function's files, one line per evaluation in ``<output_dir>/eval/history.jsonl``, the
numbers under ``eval/<key>`` in the Trainer's log history); the function owns *what*. The
history lines are the ones :func:`analyses.frames.trajectory_frame` reads.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from unlearning.runs.folder import RunFolder, append_jsonl

logger = logging.getLogger(__name__)

__all__ = ["EvaluateFn", "StepEvalCallback", "numeric_summary"]

#: ``evaluate(model, tokenizer, out_dir) -> summary``: evaluate, write files into ``out_dir``, return the numbers
EvaluateFn = Callable[[Any, Any, Path], Mapping[str, Any]]


def numeric_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The flat numeric and string entries of an evaluation summary (what history lines keep)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


class StepEvalCallback(TrainerCallback):
    """Run an evaluation function at chosen points of training (see the module docstring).

    Args:
        evaluate: ``evaluate(model, tokenizer, out_dir) -> summary`` (or a subclass overrides :meth:`run`).
        tokenizer: defaults to the Trainer's ``processing_class``.
        at_steps: evaluate at these optimizer steps (0 = before the first update, at
            ``on_train_begin``).
        every_steps: evaluate when ``global_step % every_steps == 0`` (None: never by step).
        per_epoch: evaluate at the end of each epoch.
        output_dir: where ``eval/`` goes; defaults to the Trainer's ``args.output_dir``.
        history_row: the summary entries a history line keeps (default
            :func:`numeric_summary`); ``step`` and ``epoch`` are added.
        log_keys: the summary keys logged after each evaluation (default: every float).

    Every rank calls the function (a distributed evaluation shards and gathers inside it);
    only the main process (``args.process_index == 0``) writes the history. Step and epoch end
    can coincide: a step is evaluated once.
    """

    def __init__(
        self,
        evaluate: EvaluateFn | None = None,
        tokenizer=None,
        *,
        at_steps: Sequence[int] = (),
        every_steps: int | None = None,
        per_epoch: bool = False,
        output_dir: str | None = None,
        history_row: Callable[[Mapping[str, Any]], dict[str, Any]] = numeric_summary,
        log_keys: Sequence[str] | None = None,
    ):
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"every_steps must be >= 1 or None, got {every_steps}")
        self.evaluate_fn = evaluate
        self.tokenizer = tokenizer
        self.at_steps = {int(s) for s in at_steps}
        self.every_steps, self.per_epoch = every_steps, per_epoch
        self.output_dir = output_dir
        self.history_row = history_row
        self.log_keys = list(log_keys) if log_keys is not None else None
        self.history: list[dict] = []
        self._last_step = -1

    # -- Trainer events --
    def on_train_begin(self, args, state, control, **kwargs):
        if 0 in self.at_steps and state.global_step == 0:
            self.evaluate(args, state, kwargs.get("model"), kwargs.get("processing_class"))

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if (self.every_steps and step % self.every_steps == 0) or step in self.at_steps:
            self.evaluate(args, state, kwargs.get("model"), kwargs.get("processing_class"))

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.per_epoch:
            self.evaluate(args, state, kwargs.get("model"), kwargs.get("processing_class"))

    # -- work --
    def evaluate(self, args, state, model, tokenizer=None) -> dict | None:
        """Evaluate now (every rank calls this together); returns the history row (None if done already)."""
        step = int(state.global_step)
        if step == self._last_step:  # step and epoch end can coincide
            return None
        self._last_step = step
        tok = self.tokenizer if self.tokenizer is not None else tokenizer
        if model is None or tok is None:
            raise ValueError(f"{type(self).__name__} needs the model and a tokenizer (pass tokenizer= or "
                             "processing_class to the Trainer)")
        folder = RunFolder(self.output_dir or args.output_dir)
        out_dir = folder.eval_step_dir(step)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                summary = self.run(model, tok, out_dir, args, state)
        finally:
            model.train(was_training)
        row = {**self.history_row(summary), "step": step, "epoch": float(state.epoch or 0.0)}
        self.history.append(row)
        if getattr(args, "process_index", 0) == 0:
            self._write(folder, row, state)
        return row

    def run(self, model, tokenizer, out_dir: Path, args, state) -> Mapping[str, Any]:
        """The evaluation of one step: ``evaluate(model, tokenizer, out_dir)`` (subclasses may do more)."""
        if self.evaluate_fn is None:
            raise NotImplementedError(f"{type(self).__name__}: pass evaluate= (a function (model, tokenizer, out_dir) "
                                      "-> summary) or override run()")
        return dict(self.evaluate_fn(model, tokenizer, out_dir))

    def _write(self, folder: RunFolder, row: Mapping[str, Any], state) -> None:
        append_jsonl(folder.eval_history, [row])
        numeric = {f"eval/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step", "epoch")}
        state.log_history.append({**numeric, "step": state.global_step, "epoch": state.epoch})
        logger.info("step %d: %s", state.global_step, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)
                                                       and k != "epoch" and (self.log_keys is None or k in self.log_keys)})
