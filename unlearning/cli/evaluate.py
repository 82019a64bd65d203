"""``python -m unlearning.evaluate``: the TOFU metric suite for one model (:func:`unlearning.evaluation.evaluate_model`).

    python -m unlearning.evaluate --model PATH --data embedded --split forget10 \\
        [--retain-model PATH | --retain-logs FILE] --output-dir DIR [--max-samples N]

Every option is a field of :class:`EvaluateArguments` (``--help`` lists them with defaults).
Output directory: ``summary.json`` and ``per_instance/<set>.<format>`` (docs/metrics.md).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from unlearning.cli import Command, ModelEvaluationArguments
from unlearning.evaluation import TofuEvalConfig, evaluate_model

__all__ = ["EvaluateArguments", "build_parser", "main", "parse_args"]

logger = logging.getLogger(__name__)


@dataclass
class EvaluateArguments(ModelEvaluationArguments):
    """Options of ``python -m unlearning.evaluate``."""

    data: str = field(
        default="embedded",
        metadata={"help": "Data source: 'embedded' (offline default benchmark), 'locuslab/TOFU' or a local TOFU-style folder."},
    )
    split: str = field(default="forget10", metadata={"help": "Forget split (forget01 / forget05 / forget10)."})
    retain_model: str | None = field(
        default=None,
        metadata={"help": "Retain model (never trained on the forget split), evaluated first for forget quality."},
    )
    retain_logs: str | None = field(
        default=None,
        metadata={"help": "Instead of --retain-model: its saved evaluation (folder or summary.json) or a TOFU "
                          "eval_log_forget.json."},
    )
    batch_size: int = field(default=16, metadata={"help": "Batch size of the teacher-forced passes and of generation."})
    max_new_tokens: int = field(default=200, metadata={"help": "Greedy tokens generated per answer (ROUGE-L)."})
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per question + answer."})
    generate: bool = field(default=True, metadata={"help": "Generate answers for ROUGE-L (off: --no-generate)."})
    progress: bool = field(default=True, metadata={"help": "Progress bars (off: --no-progress)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retain_model and self.retain_logs:
            raise ValueError("pass either --retain-model or --retain-logs, not both: both give the retain model's "
                             "forget-set truth ratios for forget quality")
        try:
            self.eval_config()  # the evaluation settings are validated once, by TofuEvalConfig
        except ValueError as err:
            raise ValueError(f"{err} (the options --max-samples, --batch-size, --max-new-tokens and --max-length "
                             "are its subset, batch_size, max_new_tokens and max_length)") from err

    def eval_config(self, **changes) -> TofuEvalConfig:
        """The evaluation settings of these options (``changes``: fields that differ, e.g. for the retain model)."""
        config = TofuEvalConfig(data=self.data, forget_split=self.split, subset=self.max_samples,
                                batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                                max_length=self.max_length, generate=self.generate, progress=self.progress)
        return config.replace(**changes) if changes else config


build_parser, parse_args = Command(EvaluateArguments, "python -m unlearning.evaluate", __doc__).functions


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    Command.log()
    retain_stats = args.retain_logs
    if args.retain_model:
        logger.info("evaluating the retain model %s on the forget and holdout sets", args.retain_model)
        rmodel, rtok = args.load(args.retain_model)
        retain_stats = evaluate_model(rmodel, rtok, config=args.eval_config(sets=("forget", "holdout"), generate=False))
        del rmodel
    model, tok = args.load()
    result = evaluate_model(model, tok, retain_stats=retain_stats, config=args.eval_config())
    result.summary["settings"].update(model=args.model, retain_model=args.retain_model, retain_logs=args.retain_logs)
    out = result.save(args.output_dir, fmt=args.format)
    keys = ["forget/truth_ratio", "forget/extraction_strength", "forget_quality", "model_utility", "mia/min_k_auc"]
    logger.info("wrote %s: %s", out, {k: result.summary[k] for k in keys if k in result.summary})
    return result.summary
