"""``python -m unlearning.finetune``: fine-tune a causal LM on question/answer data, or build the default target / retain models.

The training loop itself is :func:`unlearning.models.fine_tune`; this module is only the
command line, whose options are the fields of :class:`FinetuneArguments` (parsed by the project's
parser helper, :func:`geffect.cli.dataclass_parser`)::

    # build (or reuse) the cached default target + retain models and print their paths
    python -m unlearning.finetune --prepare --data embedded --forget-split forget10
    python -m unlearning.finetune --prepare --data ../tofu --max-authors 8 --forget-split forget01
    # fine-tune any causal LM (or the default Llama architecture from scratch) on a split
    python -m unlearning.finetune --data embedded --split full --output-dir runs/full --until-memorised
    python -m unlearning.finetune --data ../tofu --split full \\
        --model microsoft/phi-1_5 --epochs 5 --lr 1e-5 --batch-size 8 --output-dir runs/phi
"""
from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from geffect.cli import parse_dataclass
from unlearning.cli import Command
from unlearning.data import DataSource
from unlearning.models import (
    TINY_EMBEDDED,
    DefaultRecipe,
    MemorisationStop,
    answer_token_accuracy,
    build_model,
    fine_tune,
    fit_max_length,
    load_model_and_tokenizer,
    make_dataset,
    prepare_default_models,
    tiny_recipe,
    train_tokenizer,
)

logger = logging.getLogger(__name__)

__all__ = ["FinetuneArguments", "build_parser", "main", "parse_args"]


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class FinetuneArguments:
    """Options of ``python -m unlearning.finetune`` (every field is a ``--flag``; ``_`` or ``-``)."""

    data: str = _opt("embedded", "'embedded', a local TOFU folder of JSON-lines files, or a hub name")
    max_authors: int | None = _opt(None, "keep the forget authors plus retain authors up to this many (default: all)")
    prepare: bool = _opt(False, "build (or reuse) the cached default target + retain models and print their paths")
    forget_split: str = _opt("forget10", "the forget split (--prepare; also the split --max-authors keeps the authors of)")
    cache_dir: str | None = _opt(None, "--prepare: cache folder (default: $GEFFECT_CACHE or ~/.cache/geffect-unlearning)")
    split: str = _opt("full", "split to fine-tune on (without --prepare)")
    output_dir: str | None = _opt(None, "where to save the fine-tuned model, tokenizer and finetune.json (required without --prepare)")
    model: str | None = _opt(None, "causal LM name or path to fine-tune; default: the default Llama architecture from scratch")
    dtype: str = _opt("float32", "dtype to train --model in")
    tiny: bool = _opt(False, "start from tiny_recipe() and, for embedded data, its 3-author benchmark (seconds; smoke runs)")
    epochs: int | None = _opt(None, "epochs (the cap with --until-memorised / --prepare; default: the recipe's max_epochs)")
    target_epochs: int | None = _opt(None, "--prepare: epoch cap of the target's continuation (default: the recipe's)")
    lr: float | None = _opt(None, "peak learning rate (default: the recipe's)")
    target_lr: float | None = _opt(None, "--prepare: learning rate of the target's continuation (default: the recipe's)")
    batch_size: int | None = _opt(None, "batch size (default: the recipe's)")
    max_length: int | None = _opt(None, "token limit per example (default: fit the longest training example)")
    warmup_ratio: float | None = _opt(None, "fraction of the steps spent in linear warmup (default: the recipe's)")
    threshold: float | None = _opt(None, "stop once teacher-forced answer-token accuracy >= this (default: the recipe's)")
    until_memorised: bool = _opt(False, "without --prepare: stop once a sample of the split reaches --threshold")
    seed: int | None = _opt(None, "random seed (default: the recipe's)")
    threads: int | None = _opt(None, "torch CPU threads (1 is often fastest on a busy, shared CPU; default: torch's)")
    progress: bool = _opt(True, "show progress bars (--no-progress hides them)")
    verbose: bool = _opt(False, "log every epoch's loss and accuracy", aliases=["-v"])

    def source(self) -> DataSource:
        embedded = TINY_EMBEDDED if self.tiny and self.data == "embedded" else None
        return DataSource(self.data, embedded=embedded, max_authors=self.max_authors, forget_split=self.forget_split)

    def recipe(self) -> DefaultRecipe:
        names = {"epochs": "max_epochs", "target_epochs": "target_max_epochs", "lr": "lr", "target_lr": "target_lr",
                 "batch_size": "batch_size", "max_length": "max_length", "warmup_ratio": "warmup_ratio",
                 "threshold": "threshold", "seed": "seed"}
        overrides = {ours: getattr(self, arg) for arg, ours in names.items() if getattr(self, arg) is not None}
        return tiny_recipe(**overrides) if self.tiny else DefaultRecipe(**overrides)


COMMAND = Command(FinetuneArguments, "python -m unlearning.finetune",
                  "Fine-tune a causal LM on a QA split, or --prepare the default target/retain models (trained "
                  "until they memorise).")
build_parser, parse_args = COMMAND.functions


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_dataclass(parser, argv)
    Command.log(logging.DEBUG if args.verbose else logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe, source = args.recipe(), args.source()

    if args.prepare:
        prepared = prepare_default_models(source, recipe=recipe, cache_dir=args.cache_dir, progress=args.progress)
        print(f"target: {prepared.target}")
        print(f"retain: {prepared.retain}")
        print(f"tokenizer: {prepared.tokenizer}")
        return 0

    if not args.output_dir:
        parser.error("--output-dir is required unless --prepare is given")
    rows = [{"question": r["question"], "answer": r["answer"]} for r in source.rows(args.split)]
    if args.model:
        model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    else:
        tokenizer = train_tokenizer([t for r in rows for t in (r["question"], r["answer"])], recipe.vocab_size)
    max_length = recipe.max_length or fit_max_length(tokenizer, rows)
    recipe = dataclasses.replace(recipe, max_length=max_length)
    if not args.model:
        model = build_model(tokenizer, recipe)
    dataset = make_dataset(rows, tokenizer, max_length=max_length)
    stop = None
    if args.until_memorised:
        sample = [rows[(i * len(rows)) // recipe.monitor_rows] for i in range(min(len(rows), recipe.monitor_rows))]
        stop = MemorisationStop({args.split: make_dataset(sample, tokenizer, max_length=max_length)},
                                threshold=recipe.threshold, min_epochs=recipe.min_epochs)
    stats = fine_tune(model, tokenizer, dataset, recipe.finetune_config(max_length=max_length), stop=stop,
                      progress=args.progress, desc=args.split)
    acc = answer_token_accuracy(model, dataset, batch_size=recipe.batch_size)
    logger.info("answer-token accuracy on the training split %s: %.3f", args.split, acc)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "finetune.json").write_text(
        json.dumps(
            {"source": source.to_dict(), "split": args.split, "model": args.model,
             "recipe": recipe.to_dict(), "train_accuracy": acc, **stats},
            indent=2, default=repr,
        )
    )
    print(f"model: {out}")
    return 0

