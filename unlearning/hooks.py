"""Analysis hooks for :class:`unlearning.trainer.UnlearningTrainer` (``transformers.TrainerCallback``).

- :class:`JsonlLogCallback`: the trainer's log rows, appended to ``output_dir/logs.jsonl`` as
  they happen.
- :class:`TokenWeightCallback`: per optimizer step, the distribution of the objective's token
  weights over answer tokens and weight vs token likelihood, appended to
  ``output_dir/analysis/token_weights.jsonl`` and ``analysis/weight_vs_likelihood.jsonl``.
- :class:`GEffectCallback` (defined in :mod:`unlearning.gradient_hooks`, works with any
  Trainer): the G-effect of the step's real gradient on fixed forget/retain probe sets via
  ``geffect.GEffectTracker`` (``output_dir/analysis/geffect/``; read it with
  ``GEffectTracker.load(output_dir / "analysis").table()``), plus ``geffect/forget`` and
  ``geffect/retain`` in the trainer logs; :class:`WeightMaskCallback` applies a weight mask.

Every table is append-only JSON lines (one ``write`` + ``flush`` per row, main process only),
so a killed run keeps what it logged. Step numbering everywhere is the trainer's: row ``step``
= the optimizer step the gradient/weights belong to (1 = the first update, computed at the
initial weights), the same number as the trainer log row of that step. On resume from a
checkpoint at step S, :func:`truncate_step_tables` drops rows with ``step > S`` (they are
recomputed); :func:`read_jsonl` also keeps only the last row per key when reading.
Schemas: docs/training.md.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from transformers import TrainerCallback

from geffect import GEffectRecord
from geffect.distributed import gathered_parameters
from geffect.io import atomic_write_text, dumps
from unlearning.data import QACollator, as_source
from unlearning.evaluate import ALL_SETS, EvalResult, compute_tables, load_eval_sets, summarize
from unlearning.gradient_hooks import (ANALYSIS_DIR, PROBE_INSTANCE_WEIGHTS, PROBE_TOKEN_WEIGHTS, GEffectCallback,
                                       WeightMaskCallback, concat_batches)

logger = logging.getLogger(__name__)

__all__ = ["ANALYSIS_DIR", "EVAL_DIR", "EVAL_HISTORY_FILE", "EvalCallback", "GEffectCallback", "JsonlLogCallback",
           "LOGS_FILE", "PROBE_INSTANCE_WEIGHTS", "PROBE_TOKEN_WEIGHTS", "TokenWeightCallback", "WeightMaskCallback",
           "append_jsonl", "build_probes", "clear_step_tables", "concat_batches", "merge_shards", "read_jsonl",
           "token_weight_stats", "truncate_step_tables", "weight_vs_likelihood"]

LOGS_FILE = "logs.jsonl"
TOKEN_WEIGHTS_FILE = "token_weights.jsonl"
WEIGHT_VS_LIKELIHOOD_FILE = "weight_vs_likelihood.jsonl"
GEFFECT_DIR = "geffect"
EVAL_DIR = "eval"
EVAL_HISTORY_FILE = "history.jsonl"
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
SMALL_WEIGHT = 1e-3


# ---------------------------------------------------------------------------- JSON-lines files
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


def _step_tables(output_dir: Path) -> list[Path]:
    """The JSON-lines tables of a run that carry a ``step`` column (trainer logs, analysis, eval history)."""
    return [p for p in (output_dir / LOGS_FILE, *sorted((output_dir / ANALYSIS_DIR).rglob("*.jsonl")),
                        output_dir / EVAL_DIR / EVAL_HISTORY_FILE) if p.is_file()]


def truncate_step_tables(output_dir: str | os.PathLike, max_step: int) -> list[Path]:
    """Drop every record of steps after ``max_step`` from a run folder (resume from a checkpoint).

    JSON-lines tables are rewritten without their later rows (temporary file + ``os.replace``);
    the G-effect tracker's records are truncated by the tracker itself
    (:meth:`geffect.GEffectRecord.truncate`). Returns the files changed.
    """
    output_dir = Path(output_dir)
    changed = GEffectRecord(output_dir / ANALYSIS_DIR).truncate(max_step)
    for path in _step_tables(output_dir):
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
    """Remove the records this module writes (a fresh, non-resumed run in an existing folder)."""
    output_dir = Path(output_dir)
    GEffectRecord(output_dir / ANALYSIS_DIR).clear()
    for path in _step_tables(output_dir):
        path.unlink()


# ---------------------------------------------------------------------------- trainer logs
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


# ---------------------------------------------------------------------------- token weights
def token_weight_stats(weights: torch.Tensor) -> dict[str, float]:
    """Distribution summary of a 1-D tensor of token weights (answer tokens only).

    Keys: ``n``, ``mean``, ``std``, ``q0 q10 q25 q50 q75 q90 q100``, ``entropy`` (of the
    normalised weights w / sum w, nats; 0·log 0 = 0), ``entropy_norm`` (entropy / log n, 1 =
    uniform), ``frac_small`` (fraction of weights < 1e-3).
    """
    w = weights.detach().double().flatten()
    n = w.numel()
    if n == 0:
        return {"n": 0}
    qs = torch.quantile(w, torch.tensor(QUANTILES, dtype=w.dtype))
    out: dict[str, float] = {"n": n, "mean": float(w.mean()), "std": float(w.std(unbiased=False))}
    out.update({f"q{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)})
    total = w.sum()
    if total > 0:
        q = w / total
        ent = float(-(q[q > 0] * q[q > 0].log()).sum())
    else:
        ent = math.nan
    out["entropy"] = ent
    out["entropy_norm"] = ent / math.log(n) if n > 1 and not math.isnan(ent) else math.nan
    out["frac_small"] = float((w < SMALL_WEIGHT).double().mean())
    return out


def weight_vs_likelihood(weights: torch.Tensor, logprobs: torch.Tensor, bins: int = 10) -> list[dict[str, float]]:
    """Mean weight per bin of token likelihood p = exp(logp): ``bins`` equal bins of [0, 1].

    Returns one dict per bin: ``bin``, ``p_low``, ``p_high``, ``count``, ``mean_weight`` (NaN if
    empty), ``mean_p``. Both inputs are 1-D over the same answer tokens.
    """
    w = weights.detach().double().flatten()
    p = logprobs.detach().double().flatten().exp()
    idx = (p * bins).floor().clamp(0, bins - 1).long()  # p = 1 falls into the last bin
    count = torch.bincount(idx, minlength=bins).double()
    wsum = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, w)
    psum = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, p)
    rows = []
    for b in range(bins):
        c = float(count[b])
        rows.append(
            {
                "bin": b,
                "p_low": b / bins,
                "p_high": (b + 1) / bins,
                "count": int(c),
                "mean_weight": float(wsum[b] / c) if c else math.nan,
                "mean_p": float(psum[b] / c) if c else math.nan,
            }
        )
    return rows


def _gather_cpu(trainer, tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D CPU tensor over all processes (variable lengths; all ranks must call)."""
    if trainer.accelerator.num_processes == 1:
        return tensor
    from accelerate.utils import gather_object

    parts = gather_object([tensor])
    return torch.cat([t.to(tensor.dtype) for t in parts])


class TokenWeightCallback(TrainerCallback):
    """Log the token-weight distribution of every optimizer step (weighted objectives only).

    Uses the forget micro-batches of the step (``trainer.step_records``), gathered from all
    processes, over answer tokens. Objectives without token weights but with instance weights
    (NPO-style) get the same summary over instance weights (``kind = "instance"``, no
    likelihood table); objectives with neither are skipped.
    """

    def __init__(self, trainer, output_dir: str | os.PathLike | None = None, bins: int = 10):
        self.trainer = trainer
        root = Path(output_dir or trainer.args.output_dir) / ANALYSIS_DIR
        self.weights_path = root / TOKEN_WEIGHTS_FILE
        self.likelihood_path = root / WEIGHT_VS_LIKELIHOOD_FILE
        self.bins = bins

    def on_step_end(self, args, state, control, **kwargs):
        records = self.trainer.step_records
        if not records:
            return
        method = getattr(self.trainer.objective, "name", None)
        step = state.global_step  # the step just taken
        if all(r.token_weights is not None and r.answer_mask is not None for r in records):
            w = torch.cat([r.token_weights[r.answer_mask] for r in records])
            has_lp = all(r.token_logprobs is not None for r in records)
            lp = torch.cat([r.token_logprobs[r.answer_mask] for r in records]) if has_lp else None
            w = _gather_cpu(self.trainer, w)
            lp = _gather_cpu(self.trainer, lp) if lp is not None else None
            kind = "token"
        elif all(r.instance_weights is not None for r in records):
            w = _gather_cpu(self.trainer, torch.cat([r.instance_weights.flatten() for r in records]))
            lp, kind = None, "instance"
        else:
            return
        if not state.is_world_process_zero:
            return
        append_jsonl(self.weights_path, [{"step": step, "method": method, "kind": kind, **token_weight_stats(w)}])
        if lp is not None:
            rows = [{"step": step, "method": method, **r} for r in weight_vs_likelihood(w, lp, self.bins)]
            append_jsonl(self.likelihood_path, rows)


class EvalCallback(TrainerCallback):
    """Run the evaluation suite (``unlearning.evaluate``) during training: every k steps and/or per epoch.

    Under several processes (``torchrun`` / ``accelerate launch``) every rank evaluates its own
    shard of each set (items rank, rank + world, ...) and the per-instance tables are gathered
    with ``torch.distributed.all_gather_object``; every rank then holds the full tables and the
    same summary, so the numbers do not depend on the process count. Only rank 0 writes. The
    callback must therefore fire on all ranks, which the Trainer does. Under FSDP2 the
    parameters stay gathered on every rank while it evaluates
    (:func:`geffect.distributed.gathered_parameters`), so that each rank generates for its own
    items without lock-step forwards (the memory of one full model per rank meanwhile). (Under
    DeepSpeed ZeRO-3 generation on sharded parameters needs lock-step forwards: not supported.)

    Output per evaluation: ``<output_dir>/eval/step-<N>/`` (the files of :meth:`EvalResult.save`)
    and one JSON line per evaluation in ``<output_dir>/eval/history.jsonl``; the numeric summary
    also goes to the Trainer's log history under ``eval/<key>``.

    Args:
        tokenizer: defaults to the Trainer's ``processing_class``.
        data: an ``unlearning.data.DataSource`` (its embedded recipe and author subset apply:
            a model built on a non-default embedded benchmark is evaluated on that benchmark)
            or a source name.
        forget_split, sets, subset, batch_size, max_new_tokens, max_length, generate, retain_stats:
            as in :func:`unlearning.evaluate.evaluate_model` (the sets are loaded once).
        every_steps: evaluate when ``global_step % every_steps == 0`` (None: never by step).
        at_steps: evaluate at these optimizer steps (0 = before the first update, at
            ``on_train_begin``), e.g. a trade-off trajectory's checkpoints.
        per_epoch: evaluate at the end of each epoch.
        output_dir: where ``eval/`` goes; defaults to the Trainer's ``args.output_dir``.
    """

    def __init__(
        self,
        tokenizer=None,
        data="embedded",
        forget_split: str = "forget10",
        *,
        every_steps: int | None = None,
        at_steps: Sequence[int] = (),
        per_epoch: bool = True,
        sets: Sequence[str] | None = None,
        subset: int | None = None,
        batch_size: int = 16,
        max_new_tokens: int = 200,
        max_length: int = 512,
        generate: bool = True,
        retain_stats=None,
        output_dir: str | None = None,
    ):
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"every_steps must be >= 1 or None, got {every_steps}")
        self.tokenizer = tokenizer
        self.data, self.forget_split = as_source(data), forget_split
        self.every_steps, self.per_epoch = every_steps, per_epoch
        self.at_steps = {int(s) for s in at_steps}
        self.sets, self.subset = sets, subset
        self.kw = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, max_length=max_length, generate=generate)
        self.retain_stats = retain_stats
        self.output_dir = output_dir
        self.history: list[dict] = []
        self._eval_sets = None
        self._last_step = -1

    # -- Trainer hooks --
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
        """Evaluate now (all ranks must call this together); returns the summary."""
        if state.global_step == self._last_step:  # step and epoch end can coincide
            return None
        self._last_step = state.global_step
        tok = self.tokenizer if self.tokenizer is not None else tokenizer
        if model is None or tok is None:
            raise ValueError("EvalCallback needs the model and a tokenizer (pass tokenizer= or processing_class to the Trainer)")
        if self._eval_sets is None:
            self._eval_sets = load_eval_sets(self.data, self.forget_split, sets=self.sets or ALL_SETS, subset=self.subset)
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        was_training = model.training
        model.eval()
        try:
            with gathered_parameters(model):  # FSDP2: every rank's forwards stay local (its own items)
                tables = compute_tables(model, tok, self._eval_sets, shard=(rank, world) if distributed else None,
                                        progress=False, **self.kw)
        finally:
            model.train(was_training)
        if distributed:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, tables)
            tables = merge_shards(gathered)
        summary = summarize(tables, retain_stats=self.retain_stats)
        summary.update(step=int(state.global_step), epoch=float(state.epoch or 0.0), world_size=world)
        self.history.append(summary)
        if rank == 0:
            self._write(args, state, tables, summary)
        return summary

    def _write(self, args, state, tables, summary) -> None:
        root = Path(self.output_dir or args.output_dir) / EVAL_DIR
        EvalResult(tables=tables, summary=summary).save(root / f"step-{state.global_step}")
        append_jsonl(root / EVAL_HISTORY_FILE, [summary])
        numeric = {f"eval/{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and k not in ("step", "epoch")}
        state.log_history.append({**numeric, "step": state.global_step, "epoch": state.epoch})
        logger.info("step %d: %s", state.global_step,
                    {k: round(v, 4) for k, v in numeric.items() if k.endswith(("model_utility", "truth_ratio", "extraction_strength"))})


def merge_shards(shards: Sequence[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """Concatenate per-rank tables set by set and restore item order (by the ``index`` column)."""
    names = list(dict.fromkeys(n for s in shards for n in s))
    out = {}
    for n in names:
        parts = [s[n] for s in shards if n in s]
        out[n] = pd.concat(parts, ignore_index=True).sort_values("index", kind="stable").reset_index(drop=True)
    return out


def build_probes(forget_dataset, retain_dataset, size: int, pad_token_id: int) -> dict[str, dict[str, torch.Tensor]]:
    """Fixed probe sets: the first ``size`` rows of the forget and retain ``QADataset`` s, padded."""
    collate = QACollator(pad_token_id)
    probes = {}
    for name, ds in (("forget", forget_dataset), ("retain", retain_dataset)):
        if ds is None:
            continue
        n = min(size, len(ds))
        batch = collate([ds[i] for i in range(n)])
        probes[name] = {k: batch[k] for k in ("input_ids", "attention_mask", "labels", "index") if k in batch}
    return probes
