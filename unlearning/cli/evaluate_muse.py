"""``python -m unlearning.evaluate_muse``: MUSE's VerbMem, KnowMem and PrivLeak for one model
(:func:`unlearning.evaluation.evaluate_muse`).

    python -m unlearning.evaluate_muse --model PATH --source embedded --output-dir DIR \\
        [--retain-model PATH | --retain-auc 0.5228] [--metrics verbmem_f knowmem_f knowmem_r privleak]

Every option is a field of :class:`EvaluateMuseArguments` (``--help`` lists them with defaults).
Output directory: ``summary.json`` and ``per_instance/<table>.<format>`` (docs/muse_wmdp.md).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from unlearning.cli import Command, ModelEvaluationArguments
from unlearning.evaluation import MUSE_METRICS, evaluate_muse
from unlearning.metrics.mia import MIA_ATTACKS

__all__ = ["EvaluateMuseArguments", "build_parser", "main", "parse_args"]

logger = logging.getLogger(__name__)


@dataclass
class EvaluateMuseArguments(ModelEvaluationArguments):
    """Options of ``python -m unlearning.evaluate_muse``."""

    source: str = field(
        default="embedded",
        metadata={"help": "MUSE data: 'embedded' (offline corpus), a MUSE folder, or muse-bench/MUSE-News / -Books."},
    )
    metrics: list[str] = field(default_factory=lambda: list(MUSE_METRICS),
                               metadata={"help": "Metrics to compute.", "choices": MUSE_METRICS})
    retain_model: str | None = field(
        default=None, metadata={"help": "Retain model whose PrivLeak AUC is the reference (evaluated first)."}
    )
    retain_auc: float | None = field(
        default=None,
        metadata={"help": "Instead of --retain-model: the reference AUC in our orientation (MUSE's retrained "
                          "Llama-2-7B: 0.5228 News, 0.4607 Books); default 0.5."},
    )
    privleak_attack: str = field(default="min_k", metadata={"help": "Attack PrivLeak uses.", "choices": MIA_ATTACKS})
    k: float = field(default=0.4, metadata={"help": "Fraction of lowest token log-probs of Min-K%% (MUSE: 0.4)."})
    batch_size: int = field(default=16, metadata={"help": "Batch size of generation and scoring."})
    max_length: int | None = field(default=None, metadata={"help": "Token limit of PrivLeak texts (default: the "
                                                                    "model's context length)."})
    stemmer: bool = field(default=False, metadata={"help": "ROUGE with stemming (MUSE: off)."})
    progress: bool = field(default=True, metadata={"help": "Progress bars (off: --no-progress)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retain_model and self.retain_auc is not None:
            raise ValueError("pass either --retain-model or --retain-auc, not both: both give PrivLeak's reference AUC")


build_parser, parse_args = Command(EvaluateMuseArguments, "python -m unlearning.evaluate_muse", __doc__).functions


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    Command.log()
    common = dict(privleak_attack=args.privleak_attack, k=args.k, stemmer=args.stemmer, max_length=args.max_length,
                  batch_size=args.batch_size, max_samples=args.max_samples, progress=args.progress)
    reference = args.retain_auc
    if args.retain_model:
        logger.info("evaluating the retain model %s (PrivLeak's reference)", args.retain_model)
        rmodel, rtok = args.load(args.retain_model)
        reference = evaluate_muse(rmodel, rtok, args.source, metrics=("privleak",), **common)
        del rmodel
    model, tok = args.load()
    result = evaluate_muse(model, tok, args.source, metrics=tuple(args.metrics), retain_reference=reference, **common)
    result.summary["settings"].update(model=args.model, retain_model=args.retain_model)
    out = result.save(args.output_dir, fmt=args.format)
    logger.info("wrote %s: %s", out, {k: result.summary[k] for k in MUSE_METRICS if k in result.summary})
    return result.summary
