"""``python -m unlearning.attribute``: a WAGLE-style weight mask for a model and a forget split.

WAGLE (Jia et al., NeurIPS 2024; OPTML-Group/WAGLE) scores every weight with forget and retain
gradients and unlearns only the top ``density`` fraction. This CLI loads the model
(:func:`unlearning.models.load_model_and_tokenizer`) and the calibration data
(:mod:`unlearning.data`), then runs :func:`geffect.attribution.attribute_and_save`, which scores
the weights, thresholds them and writes

- ``OUTPUT`` (safetensors; the ``--mask`` of ``python -m unlearning.train``),
- ``OUTPUT`` with suffix ``.summary.csv``: kept fraction per parameter group and module type,
- ``OUTPUT`` with suffix ``.json``: the settings and the overall numbers.

Example::

    python -m unlearning.attribute --model PATH --data embedded --split forget10 \\
        --method wagle --density 0.8 --output masks/wagle_0.8.safetensors

Every option (``--help`` lists them with their defaults) is a field of
:class:`AttributeArguments`; dashes and underscores are both accepted (``--num-samples`` /
``--num_samples``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from geffect.attribution import DEFAULT_GAMMA, METHODS, REDUCTIONS, attribute_and_save
from geffect.masking import SCOPES
from unlearning.cli import Command
from unlearning.data import QACollator, QADataset, load_split, retain_split_for
from unlearning.models import load_model_and_tokenizer

__all__ = ["AttributeArguments", "build_parser", "calibration_loaders", "main", "parse_args"]

logger = logging.getLogger(__name__)

PROG = "python -m unlearning.attribute"
#: methods that score from the weights alone, without calibration data
DATA_FREE_METHODS = ("magnitude", "random")


@dataclass
class AttributeArguments:
    """Options of ``python -m unlearning.attribute``."""

    model: str = field(metadata={"help": "Model to score: a Hugging Face causal LM name or a local folder."})
    output: str = field(metadata={"help": "Mask file to write (.safetensors); the .summary.csv and .json go next to it."})
    data: str = field(
        default="embedded",
        metadata={"help": "Data source: 'embedded' (offline default benchmark), 'locuslab/TOFU' or a local TOFU-style folder."},
    )
    split: str = field(default="forget10", metadata={"help": "Forget split used for calibration."})
    retain_split: str | None = field(
        default=None, metadata={"help": "Retain split for method=wagle. Default: the complement of --split (forget10 -> retain90)."}
    )
    method: str = field(
        default="wagle", metadata={"help": "Attribution score (geffect.attribution.METHODS).", "choices": METHODS}
    )
    density: float = field(default=0.8, metadata={"help": "Fraction of weights UPDATED by unlearning (kept in the mask)."})
    gamma: float = field(
        default=DEFAULT_GAMMA,
        metadata={"help": "WAGLE gamma (1e-6 in the official configs, with summed gradients); 'inf' gives SNIP."},
    )
    reduction: str = field(
        default="sum",
        metadata={"help": "Sum (official) or mean of the per-instance gradients; mean rescales gamma.", "choices": REDUCTIONS},
    )
    num_samples: int | None = field(
        default=None,
        metadata={"help": "Forget instances used (default: the whole split); as many retain instances are drawn."},
    )
    batch_size: int = field(default=4, metadata={"help": "Calibration batch size (the scores do not depend on it)."})
    scope: str | None = field(
        default=None,
        metadata={"help": "Ranking scope. Default: global; row for wanda, as in WAGLE's Wanda baseline.", "choices": SCOPES},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the retain sample and of method=random."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, float32, bfloat16, float16."})
    device: str = field(default="cpu", metadata={"help": "Device to load the model on (cpu, cuda, cuda:1, ...)."})
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per question + answer."})
    progress: bool = field(default=True, metadata={"help": "Progress bar over the calibration batches (off: --no-progress)."})

    def __post_init__(self) -> None:
        if not 0.0 <= self.density <= 1.0:
            raise ValueError(f"--density is the fraction of weights updated and must be in [0, 1], got {self.density}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"--num-samples must be >= 1 (or left out for the whole split), got {self.num_samples}")


build_parser, parse_args = Command(AttributeArguments, PROG, __doc__).functions


def calibration_loaders(args: AttributeArguments, tokenizer) -> tuple[DataLoader | None, DataLoader | None, dict[str, Any]]:
    """(forget loader, retain loader, info for the record): None where ``args.method`` needs no such data.

    The forget loader holds the first ``num_samples`` rows of ``args.split``; for ``wagle`` the
    retain loader holds as many rows of the retain split, drawn without replacement with
    ``args.seed`` (kept in split order).
    """
    info: dict[str, Any] = {"model": str(args.model), "data": args.data, "split": args.split}
    if args.method in DATA_FREE_METHODS:
        return None, None, info
    forget_rows = load_split(args.data, args.split)
    n = len(forget_rows) if args.num_samples is None else min(args.num_samples, len(forget_rows))
    forget_rows = forget_rows.select(range(n))
    collate = QACollator(tokenizer.pad_token_id)
    forget = DataLoader(QADataset(forget_rows, tokenizer, max_length=args.max_length),
                        batch_size=args.batch_size, shuffle=False, collate_fn=collate)
    info["num_samples"] = n
    retain = None
    if args.method == "wagle":
        retain_split = args.retain_split or retain_split_for(args.split)
        retain_rows = load_split(args.data, retain_split)
        g = torch.Generator().manual_seed(args.seed)
        pick = torch.randperm(len(retain_rows), generator=g)[: min(n, len(retain_rows))].tolist()
        retain_rows = retain_rows.select(sorted(pick))
        retain = DataLoader(QADataset(retain_rows, tokenizer, max_length=args.max_length),
                            batch_size=args.batch_size, shuffle=False, collate_fn=collate)
        info.update(retain_split=retain_split, num_retain_samples=len(pick))
    return forget, retain, info


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    args = parse_args(argv)
    Command.log()
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
    forget, retain, info = calibration_loaders(args, tokenizer)
    return attribute_and_save(model, forget, retain, args.output, method=args.method, density=args.density,
                              gamma=args.gamma, reduction=args.reduction, scope=args.scope, seed=args.seed,
                              progress=args.progress, info=info)

