"""``python -m unlearning.train``: unlearn a forget split with one method (:func:`unlearning.training.run_unlearning`).

    python -m unlearning.train --method satimp --output-dir runs/satimp            # default tiny model
    python -m unlearning.train --model microsoft/phi-1_5 --data locuslab/TOFU --split forget10 \\
        --method satimp --retain-loss nll --retain-weight 0.1 --track-geffect --output-dir runs/phi
    torchrun --nproc_per_node 2 -m unlearning.train --method ga --output-dir runs/ga2   # DDP (gloo on CPU)

Every ``UnlearningArguments`` / ``TrainingArguments`` field is a flag (``--learning-rate`` or
``--learning_rate``). Outputs (docs/training.md): the final model + tokenizer,
``run_config.json``, ``logs.jsonl``, ``analysis/`` tables, ``checkpoint-*`` folders.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from unlearning.cli import Command
from unlearning.training import RunResult, UnlearningArguments, run_unlearning

__all__ = ["build_parser", "main", "parse_args"]

logger = logging.getLogger(__name__)

build_parser, parse_args = Command(UnlearningArguments, "python -m unlearning.train", __doc__).functions


def main(argv: Sequence[str] | None = None) -> RunResult:
    args = parse_args(argv)
    Command.log(args.get_process_log_level())
    result = run_unlearning(args)
    logger.info("unlearning finished: %s (model, run_config.json, logs.jsonl, analysis/)", result.output_dir)
    return result
