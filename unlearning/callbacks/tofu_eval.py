"""TOFU's evaluation during training: :class:`EvalCallback`, the TOFU use of :class:`StepEvalCallback`.

The callback takes the settings of :func:`unlearning.evaluation.evaluate_model` as the same
object, a :class:`unlearning.evaluation.TofuEvalConfig` (the sets are loaded once), and
evaluates a shard of every set on each process.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from geffect.distributed import gathered_parameters
from unlearning.callbacks.step_eval import StepEvalCallback
from unlearning.evaluation.result import EvalResult
from unlearning.evaluation.tofu import TofuEvalConfig, compute_tables, load_eval_sets, merge_shards, summarize

__all__ = ["EvalCallback"]

LOG_KEYS = ("forget/extraction_strength", "forget/truth_ratio", "retain/extraction_strength", "retain/truth_ratio",
            "forget_quality", "model_utility")


class EvalCallback(StepEvalCallback):
    """Run the TOFU evaluation suite during training: every k steps, at chosen steps and/or per epoch.

    Under several processes (``torchrun`` / ``accelerate launch``) every rank evaluates its own
    shard of each set (items rank, rank + world, ...; rank and world from the Trainer's
    ``args.process_index`` / ``args.world_size``) and the per-instance tables are gathered with
    ``torch.distributed.all_gather_object``; every rank then holds the full tables and the same
    summary, so the numbers do not depend on the process count. Only rank 0 writes. The
    callback must therefore fire on all ranks, which the Trainer does. Under FSDP2 the
    parameters stay gathered on every rank while it evaluates
    (:func:`geffect.distributed.gathered_parameters`), so that each rank generates for its own
    items without lock-step forwards (the memory of one full model per rank meanwhile). (Under
    DeepSpeed ZeRO-3 generation on sharded parameters needs lock-step forwards: not supported.)

    Output per evaluation: ``<output_dir>/eval/step-<N>/`` (the files of :meth:`EvalResult.save`,
    the summary with ``step``, ``epoch`` and ``world_size``) and that summary as one JSON line
    in ``<output_dir>/eval/history.jsonl``; its numbers also go to the Trainer's log history
    under ``eval/<key>``.

    Args:
        tokenizer: defaults to the Trainer's ``processing_class``.
        data, forget_split: as in :class:`unlearning.evaluation.TofuEvalConfig`.
        config: the evaluation settings as one :class:`TofuEvalConfig`; or give ``data``,
            ``forget_split`` and the other fields as keywords (``sets``, ``subset``,
            ``batch_size``, ``max_new_tokens``, ``max_length``, ``generate``, ...), not both.
        retain_stats: the retain model's forget truth ratios (for forget quality), anything
            :func:`unlearning.evaluation.load_retain_stats` reads.
        every_steps, at_steps, per_epoch, output_dir: as in :class:`StepEvalCallback`.
    """

    def __init__(
        self,
        tokenizer=None,
        data=None,
        forget_split: str | None = None,
        *,
        config: TofuEvalConfig | None = None,
        retain_stats=None,
        every_steps: int | None = None,
        at_steps: Sequence[int] = (),
        per_epoch: bool = True,
        output_dir: str | None = None,
        **settings: Any,
    ):
        super().__init__(None, tokenizer, at_steps=at_steps, every_steps=every_steps, per_epoch=per_epoch,
                         output_dir=output_dir, history_row=dict, log_keys=LOG_KEYS)
        self.config = TofuEvalConfig.resolve(config, data=data, forget_split=forget_split, **settings)
        self.retain_stats = retain_stats
        self._eval_sets = None

    def run(self, model, tokenizer, out_dir: Path, args, state) -> dict:
        """The sharded TOFU evaluation of one step; rank 0 saves it into ``out_dir``."""
        config = self.config
        if self._eval_sets is None:
            self._eval_sets = load_eval_sets(config.data, config.forget_split, sets=config.sets, subset=config.subset,
                                             data_config=config.data_config)
        rank, world = getattr(args, "process_index", 0), getattr(args, "world_size", 1)
        with gathered_parameters(model):  # FSDP2: every rank's forwards stay local (its own items)
            tables = compute_tables(model, tokenizer, self._eval_sets, config=config.replace(progress=False),
                                    shard=(rank, world) if world > 1 else None)
        if world > 1:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, tables)
            tables = merge_shards(gathered)
        summary = summarize(tables, retain_stats=self.retain_stats)
        summary.update(step=int(state.global_step), epoch=float(state.epoch or 0.0), world_size=world)
        if rank == 0:
            EvalResult(tables=tables, summary=summary).save(out_dir)
        return summary
