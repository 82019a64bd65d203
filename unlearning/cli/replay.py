"""``python -m unlearning.replay``: recompute the G-effects of a finished ``python -m unlearning.train`` run
from its checkpoints (:func:`unlearning.runs.replay_run`).

    python -m unlearning.replay --run-dir runs/npo --pg-effect batch --output-dir runs/npo/replay

The objective, its hyper-parameters and the initial and reference models are read from the
run's ``run_config.json``; for another trainer's run use ``python -m geffect.replay`` with
``--objective``. Every option is a field of :class:`ReplayRunArguments`.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from geffect.tracker import PG_INSTANCES, GEffectRecord
from unlearning.cli import Command
from unlearning.runs import replay_run

__all__ = ["ReplayRunArguments", "build_parser", "main", "parse_args"]

logger = logging.getLogger(__name__)


@dataclass
class ReplayRunArguments:
    """Options of ``python -m unlearning.replay``."""

    run_dir: str = field(metadata={"help": "The run folder (output_dir of python -m unlearning.train)."})
    steps: list[int] | None = field(default=None, metadata={"help": "Replay only these steps (default: every "
                                                                    "checkpoint, and step 1 from the initial model)."})
    pg_effect: str | None = field(default=None, metadata={"help": "Also PG-effects: of the step's unlearning "
                                                                  "instances or of the forget probe.",
                                                          "choices": PG_INSTANCES})
    output_dir: str | None = field(default=None, metadata={"help": "Where the replay's tracker folder goes "
                                                                   "(default: geffect.replay's choice inside the run)."})
    initial_model: str | None = field(default=None, metadata={"help": "The model before unlearning (default: the "
                                                                      "run_config.json's model)."})
    device: str = field(default="cpu", metadata={"help": "Device to load the checkpoints on."})


build_parser, parse_args = Command(ReplayRunArguments, "python -m unlearning.replay", __doc__).functions


def main(argv: Sequence[str] | None = None) -> GEffectRecord:
    args = parse_args(argv)
    Command.log()
    record = replay_run(args.run_dir, steps=args.steps, pg_effect=args.pg_effect, output_dir=args.output_dir,
                        initial_model=args.initial_model, device=args.device)
    logger.info("replayed steps %s into %s", record.steps, record.dir)
    return record
