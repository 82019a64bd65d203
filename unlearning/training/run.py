"""Run one unlearning method: :func:`run_unlearning` (the library behind ``python -m unlearning.train``).

    from unlearning.training import UnlearningArguments, run_unlearning
    result = run_unlearning(UnlearningArguments(method="satimp", output_dir="runs/satimp", track_geffect=True))
    result.trainer.state.log_history, result.run_config

The command line (:mod:`unlearning.cli.train`)::

    python -m unlearning.train --method satimp --output-dir runs/satimp            # default tiny model
    python -m unlearning.train --model microsoft/phi-1_5 --data locuslab/TOFU --split forget10 \\
        --method satimp --retain-loss nll --retain-weight 0.1 --track-geffect --output-dir runs/phi
    torchrun --nproc_per_node 2 -m unlearning.train --method ga --output-dir runs/ga2   # DDP (gloo on CPU)

Outputs (docs/training.md; names in :mod:`unlearning.runs.folder`): the final model + tokenizer,
``run_config.json``, ``logs.jsonl``, ``analysis/`` tables, ``checkpoint-*`` folders.
"""
from __future__ import annotations

import logging
import platform
import re
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import accelerate
import torch
import transformers
from transformers import PreTrainedModel
from transformers.trainer_utils import get_last_checkpoint

from geffect.io import atomic_write_json
from geffect.masking import check_mask, load_mask
from unlearning import objectives
from unlearning.callbacks import GEffectCallback, JsonlLogCallback, TokenWeightCallback
from unlearning.data import ForgetRetainCollator, ForgetRetainDataset, QADataset, get_template, probe_batches
from unlearning.models import load_model_and_tokenizer, prepare_default_models
from unlearning.runs.folder import (CHECKPOINT_PREFIX, REFERENCE_COPY, RunFolder, checkpoint_step, clear_step_tables,
                                    truncate_step_tables)
from unlearning.training.config import UnlearningArguments
from unlearning.training.trainer import UnlearningTrainer

logger = logging.getLogger(__name__)

__all__ = ["RunResult", "build_datasets", "freeze_except", "holdout_retain_rows", "run_unlearning"]


@dataclass
class RunResult:
    """What :func:`run_unlearning` returns."""

    output_dir: Path
    trainer: UnlearningTrainer
    model: PreTrainedModel
    tokenizer: Any
    run_config: dict[str, Any]
    train_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def analysis_dir(self) -> Path:
        return RunFolder(self.output_dir).analysis

    @property
    def logs_path(self) -> Path:
        return RunFolder(self.output_dir).logs


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "accelerate": accelerate.__version__}
    try:
        out["geffect-unlearning"] = version("geffect-unlearning")
    except PackageNotFoundError:  # not installed as a distribution
        out["geffect-unlearning"] = "unknown"
    return out


def _load_model(args: UnlearningArguments):
    """The model and tokenizer named by ``args.model``, or the prepared default model."""
    source = args.model
    if source is None:
        with args.main_process_first(desc="preparing the default model"):
            prepared = prepare_default_models(args.data_source(), args.split)
        source = str(prepared.target)
        logger.info("no --model given: using the default model at %s", source)
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    model, tokenizer = load_model_and_tokenizer(source, dtype=dtype)
    return model, tokenizer, source


def build_datasets(args: UnlearningArguments, tokenizer, model=None, objective=None, data=None):
    """(ForgetRetainDataset, forget QADataset, retain QADataset) for ``args``.

    ``data``: the ``unlearning.data.DataSource`` to read (default ``args.data_source()``; pass
    one for a non-default embedded benchmark).

    The retain sampler of ``ForgetRetainDataset`` is seeded with ``seed + process_index`` (its
    ``rank``) so every process draws its own retain rows (open-unlearning issue #139).
    """
    source = data if data is not None else args.data_source()
    template = get_template(model if model is not None else tokenizer)
    forget_rows = source.load_split(args.split)
    retain_rows = holdout_retain_rows(source.load_split(args.resolved_retain_split()), source, args)
    forget = QADataset(forget_rows, tokenizer, template=template, max_length=args.max_length)
    retain = QADataset(retain_rows, tokenizer, template=template, max_length=args.max_length)
    idk = source.idk_answers() if objectives.needs_refusal(objective if objective is not None else args.method) else None
    dataset = ForgetRetainDataset(forget, retain, seed=args.seed, rank=args.process_index, idk_answers=idk)
    return dataset, forget, retain


def holdout_retain_rows(rows, source, args: UnlearningArguments):
    """The retain rows the retain term may train on (``--retain-holdout``).

    With ``eval`` the rows whose question is among the retain rows the evaluation measures
    (the first ``--retain-holdout-rows`` rows of ``retain_perturbed``; all of them by default)
    are dropped, so retain metrics are measured on rows the retain term never saw (the protocol
    of the SatImp and G-effect code, which hold TOFU's first 400 retain rows out). When that
    would leave no row (a small author subset), every row is used and a warning says so.
    """
    if args.retain_holdout == "none" or "retain_perturbed" not in source.available_splits():
        return rows
    evaluated = source.rows("retain_perturbed", limit=args.retain_holdout_rows)
    held = {r["question"] for r in evaluated}
    keep = [i for i, q in enumerate(rows["question"]) if q not in held]
    if not keep:
        logger.warning("--retain-holdout eval: all %d retain rows are evaluation rows; the retain term trains on them "
                       "(pass --retain-holdout-rows N to hold out only the N evaluated rows)", len(rows))
        return rows
    if len(keep) < len(rows):
        logger.info("retain term: %d of %d retain rows (%d held out for evaluation)", len(keep), len(rows),
                    len(rows) - len(keep))
    return rows.select(keep)


def freeze_except(model, pattern: str) -> list[str]:
    """Train only parameters whose name matches ``pattern`` (``re.search``); returns their names."""
    regex = re.compile(pattern)
    kept = []
    for name, p in model.named_parameters():
        p.requires_grad_(bool(regex.search(name)))
        if p.requires_grad:
            kept.append(name)
    if not kept:
        raise ValueError(f"--trainable {pattern!r} matches no parameter; names look like {next(iter(dict(model.named_parameters())))!r}")
    logger.info("--trainable %r: training %d parameter tensors, the rest frozen", pattern, len(kept))
    return kept


def _checkpoint_to_resume(args: UnlearningArguments) -> str | None:
    if args.resume_from_checkpoint:
        return args.resume_from_checkpoint
    if args.resume:
        last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
        if last is None:
            logger.warning("--resume: no %s-* folder in %s; starting from scratch", CHECKPOINT_PREFIX, args.output_dir)
        return last
    return None


def run_unlearning(
    args: UnlearningArguments,
    model: PreTrainedModel | None = None,
    tokenizer=None,
    *,
    objective=None,
    data=None,
    datasets=None,
    callbacks: list | None = None,
) -> RunResult:
    """Unlearn ``args.split`` from a model with ``args.method``; returns the trained trainer.

    ``model``/``tokenizer`` override ``args.model`` (both or neither). ``objective``: an
    objective object to train with (default ``unlearning.objectives.get(args.method,
    **args.objective_hparams())``); the trainer builds its reference model (at most one) when
    the objective needs it, and every callback that needs the objective or the reference reads
    them from the trainer. ``data``: an ``unlearning.data.DataSource`` (default
    ``args.data_source()``), e.g. a non-default embedded benchmark. ``datasets``: ready training
    data instead of ``data``, e.g. raw text (MUSE, WMDP): an ``unlearning.data.TextUnlearningData``
    or any object with ``train`` (a ``ForgetRetainDataset``), ``forget`` / ``retain`` (the
    datasets its items come from; their first rows are the G-effect probes) and ``collator``
    (``ForgetRetainCollator``); objectives that need refusal batches need ``train`` built with
    ``idk_answers``. Writes everything listed in docs/training.md under ``args.output_dir``;
    extra ``callbacks`` are added to the trainer.
    """
    _check_inputs(model, tokenizer, data, datasets)
    folder = RunFolder(args.output_dir)
    folder.root.mkdir(parents=True, exist_ok=True)
    if model is None:
        model, tokenizer, model_source = _load_model(args)
    else:
        model_source = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    if args.trainable is not None:
        freeze_except(model, args.trainable)
    if objective is None:
        objective = objectives.get(args.method, **args.objective_hparams())
    training = _TrainingData.build(args, tokenizer, model, objective, data, datasets)
    mask = None
    if args.mask:
        mask = load_mask(args.mask, device=args.device)
        check_mask(mask, model)
    checkpoint = _prepare_folder(args, folder)
    trainer = UnlearningTrainer(model=model, args=args, objective=objective, ref_model=args.ref_model,
                                weight_mask=mask, train_dataset=training.train, data_collator=training.collator,
                                processing_class=tokenizer)
    _add_callbacks(trainer, args, folder, training, tokenizer, callbacks)
    run_config = _run_config(args, trainer, objective, model_source, training, checkpoint)
    if trainer.is_world_process_zero():
        atomic_write_json(folder.run_config, run_config)

    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(folder.root))  # model + tokenizer (processing_class); main process writes
    metrics = dict(train_output.metrics)
    run_config["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run_config["global_step"] = trainer.state.global_step
    run_config["train_metrics"] = metrics
    if trainer.is_world_process_zero():
        atomic_write_json(folder.run_config, run_config)
    return RunResult(folder.root, trainer, trainer.accelerator.unwrap_model(trainer.model), tokenizer, run_config, metrics)


def _check_inputs(model, tokenizer, data, datasets) -> None:
    if (model is None) != (tokenizer is None):
        raise ValueError("pass both model and tokenizer to run_unlearning, or neither (then args.model is loaded)")
    if datasets is not None and data is not None:
        raise ValueError("pass data= (a DataSource to read) or datasets= (ready training data) to run_unlearning, "
                         "not both")
    if datasets is not None:
        missing = [a for a in ("train", "forget", "retain", "collator") if not hasattr(datasets, a)]
        if missing:
            raise ValueError(f"datasets= lacks {missing}; pass an unlearning.data.TextUnlearningData (from "
                             "build_text_unlearning_data) or an object with train, forget, retain and collator")


@dataclass
class _TrainingData:
    """What the trainer trains on: the paired dataset, the sets its items come from, the collator."""

    train: Any
    forget: Any
    retain: Any
    collator: Any
    description: dict[str, Any]
    from_source: bool  # read through a DataSource (rather than given ready)

    @classmethod
    def build(cls, args: UnlearningArguments, tokenizer, model, objective, data, datasets) -> _TrainingData:
        if datasets is None:
            dataset, forget, retain = build_datasets(args, tokenizer, model, objective, data)
            description = (data if data is not None else args.data_source()).to_dict()
            return cls(dataset, forget, retain, ForgetRetainCollator(tokenizer.pad_token_id), description, True)
        if objectives.needs_refusal(objective) and getattr(datasets.train, "idk_answers", None) is None:
            raise ValueError(f"objective {getattr(objective, 'name', args.method)!r} trains on refusal answers, but the "
                             "given datasets have none; build them with idk_answers=...")
        describe = getattr(datasets, "describe", None)
        description = describe() if callable(describe) else {"given": type(datasets).__name__}
        return cls(datasets.train, datasets.forget, datasets.retain, datasets.collator, description, False)


def _prepare_folder(args: UnlearningArguments, folder: RunFolder) -> str | None:
    """The checkpoint to resume from; the folder's step records cleared (fresh run) or truncated (resume)."""
    checkpoint = _checkpoint_to_resume(args)
    if args.process_index == 0:
        if checkpoint is None:
            clear_step_tables(folder.root)
        else:
            step = checkpoint_step(checkpoint)
            changed = truncate_step_tables(folder.root, step)
            logger.info("resuming from %s (step %d); dropped later rows from %d tables", checkpoint, step, len(changed))
    return checkpoint


def _add_callbacks(trainer: UnlearningTrainer, args: UnlearningArguments, folder: RunFolder, training: _TrainingData,
                   tokenizer, callbacks: list | None) -> None:
    trainer.add_callback(JsonlLogCallback(folder.logs))
    if args.log_token_weights:
        trainer.add_callback(TokenWeightCallback(trainer))
    if args.track_geffect:
        config = args.geffect_config
        probes = probe_batches({"forget": training.forget, "retain": training.retain}, size=config.probe_size,
                               pad_token_id=tokenizer.pad_token_id)
        trainer.add_callback(GEffectCallback(probes, config=config))
    for cb in callbacks or []:
        trainer.add_callback(cb)


def _run_config(args: UnlearningArguments, trainer: UnlearningTrainer, objective, model_source: str,
                training: _TrainingData, checkpoint: str | None) -> dict[str, Any]:
    """The ``run_config.json`` record of a run (``finished``, ``global_step`` and metrics are added at the end)."""
    world = args.world_size
    forget, retain = training.forget, training.retain
    return {
        "method": args.method,
        "objective": {"name": getattr(objective, "name", args.method), "hparams": getattr(objective, "hparams", {}),
                      "needs_reference": bool(getattr(objective, "needs_reference", False))},
        "model": model_source,
        "ref_model": (args.ref_model or REFERENCE_COPY) if trainer.ref_model is not None else None,
        "data": args.data,
        "split": args.split,
        "retain_split": args.resolved_retain_split() if training.from_source else None,
        "data_source": training.description,
        "n_forget": len(forget),
        "n_retain": len(retain) if retain is not None else 0,
        "retain_holdout": {"mode": args.retain_holdout, "rows": args.retain_holdout_rows} if training.from_source else None,
        "rows_truncated": {"forget": getattr(forget, "n_truncated", 0),
                           "retain": getattr(retain, "n_truncated", 0) if retain is not None else 0,
                           "max_length": args.max_length},
        "mask": args.mask,
        "trainable": args.trainable,
        "world_size": world,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
        "learning_rate": args.learning_rate,
        "track_geffect": args.track_geffect,
        "geffect_every": args.geffect_every,
        "geffect_probe_size": args.geffect_probe_size,
        "resumed_from": checkpoint,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "finished": None,
        "versions": _versions(),
        "command": sys.argv,
        "training_args": args.to_dict(),
    }
