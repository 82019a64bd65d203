"""``python -m unlearning.evaluate_wmdp``: WMDP hazard accuracy and MMLU-style utility for one model
(:func:`unlearning.evaluation.evaluate_wmdp`).

    python -m unlearning.evaluate_wmdp --model PATH --source embedded --output-dir DIR [--backend lm_eval]

Every option is a field of :class:`EvaluateWmdpArguments` (``--help`` lists them with defaults).
Output directory: ``summary.json`` and ``per_instance/<set>.<format>`` (docs/muse_wmdp.md).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from unlearning.cli import Command, ModelEvaluationArguments
from unlearning.data.wmdp import WMDP_SUBSETS
from unlearning.evaluation import evaluate_wmdp

__all__ = ["EvaluateWmdpArguments", "build_parser", "main", "parse_args"]

logger = logging.getLogger(__name__)


@dataclass
class EvaluateWmdpArguments(ModelEvaluationArguments):
    """Options of ``python -m unlearning.evaluate_wmdp``."""

    source: str = field(default="embedded", metadata={"help": "WMDP data: 'embedded', a WMDP folder, or cais/wmdp."})
    subsets: list[str] = field(default_factory=lambda: ["bio", "cyber"],
                               metadata={"help": "WMDP subsets.", "choices": WMDP_SUBSETS})
    utility: bool = field(default=True, metadata={"help": "Also score the utility questions (off: --no-utility)."})
    utility_source: str | None = field(
        default=None, metadata={"help": "Utility questions: default cais/mmlu for the hub source, else --source."}
    )
    backend: str = field(default="native", metadata={"help": "Scorer: our native one or lm-evaluation-harness.",
                                                     "choices": ("native", "lm_eval")})
    batch_size: int = field(default=16, metadata={"help": "Batch size of the scoring passes."})
    max_length: int | None = field(default=None, metadata={"help": "Token limit (default: the model's context length)."})


build_parser, parse_args = Command(EvaluateWmdpArguments, "python -m unlearning.evaluate_wmdp", __doc__).functions


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    Command.log()
    model, tok = args.load()
    result = evaluate_wmdp(model, tok, args.source, subsets=tuple(args.subsets), utility=args.utility,
                           utility_source=args.utility_source, backend=args.backend, batch_size=args.batch_size,
                           max_length=args.max_length, max_samples=args.max_samples)
    result.summary["settings"].update(model=args.model)
    out = result.save(args.output_dir, fmt=args.format)
    logger.info("wrote %s: %s", out, {k: v for k, v in result.summary.items() if k.endswith("/acc")})
    return result.summary
