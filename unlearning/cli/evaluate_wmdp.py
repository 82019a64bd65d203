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

from geffect.cli import dataclass_parser, parse_dataclass
from unlearning.data.wmdp import WMDP_SUBSETS
from unlearning.evaluation import evaluate_wmdp
from unlearning.models import load_model_and_tokenizer

__all__ = ["EvaluateWmdpArguments", "build_parser", "main", "parse_args"]

logger = logging.getLogger(__name__)

PROG = "python -m unlearning.evaluate_wmdp"


@dataclass
class EvaluateWmdpArguments:
    """Options of ``python -m unlearning.evaluate_wmdp``."""

    model: str = field(metadata={"help": "Model to evaluate: a Hugging Face causal LM name or a local folder."})
    output_dir: str = field(metadata={"help": "Folder for summary.json and per_instance/<set>.<format>."})
    source: str = field(default="embedded", metadata={"help": "WMDP data: 'embedded', a WMDP folder, or cais/wmdp."})
    subsets: list[str] = field(default_factory=lambda: ["bio", "cyber"],
                               metadata={"help": "WMDP subsets.", "choices": WMDP_SUBSETS})
    utility: bool = field(default=True, metadata={"help": "Also score the utility questions (off: --no-utility)."})
    utility_source: str | None = field(
        default=None, metadata={"help": "Utility questions: default cais/mmlu for the hub source, else --source."}
    )
    backend: str = field(default="native", metadata={"help": "Scorer: our native one or lm-evaluation-harness.",
                                                     "choices": ("native", "lm_eval")})
    max_samples: int | None = field(default=None, metadata={"help": "Score only the first N questions of every set."})
    batch_size: int = field(default=16, metadata={"help": "Batch size of the scoring passes."})
    max_length: int | None = field(default=None, metadata={"help": "Token limit (default: the model's context length)."})
    format: str = field(
        default="parquet", metadata={"help": "File format of the per-instance tables.", "choices": ("parquet", "jsonl")}
    )
    device: str = field(default="cpu", metadata={"help": "Device to load the model on (cpu, cuda, cuda:1, ...)."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, float32, bfloat16, float16."})

    def __post_init__(self) -> None:
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max-samples must be >= 1 (or left out for every question), got {self.max_samples}")


def build_parser():
    """The parser of ``python -m unlearning.evaluate_wmdp``, built from :class:`EvaluateWmdpArguments`."""
    return dataclass_parser(EvaluateWmdpArguments, prog=PROG, description=__doc__.split("\n\n")[0])


def parse_args(argv: Sequence[str] | None = None) -> EvaluateWmdpArguments:
    """:class:`EvaluateWmdpArguments` from command-line arguments (``sys.argv[1:]`` when None)."""
    return parse_dataclass(build_parser(), argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model, tok = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
    result = evaluate_wmdp(model, tok, args.source, subsets=tuple(args.subsets), utility=args.utility,
                           utility_source=args.utility_source, backend=args.backend, batch_size=args.batch_size,
                           max_length=args.max_length, max_samples=args.max_samples)
    result.summary["settings"].update(model=args.model)
    out = result.save(args.output_dir, fmt=args.format)
    logger.info("wrote %s: %s", out, {k: v for k, v in result.summary.items() if k.endswith("/acc")})
    return result.summary
