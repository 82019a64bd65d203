"""The entry points of weight attribution: :func:`attribute_weights` (scores) and
:func:`attribute_and_save` (scores, mask and summaries written to files).

Both dispatch on the method name through the scorer registry (:mod:`geffect.attribution.registry`).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geffect.attribution.calibration import Batch
from geffect.attribution.registry import REDUCTIONS, ScoringContext, get_scorer, scorer_scope
from geffect.attribution.wagle import DEFAULT_GAMMA
from geffect.distributed import common_group, rank_in, reshard, true_counts
from geffect.io import atomic_write, atomic_write_json
from geffect.masking import mask_summary, save_mask, weight_mask

logger = logging.getLogger(__name__)

__all__ = ["attribute_and_save", "attribute_weights"]


def attribute_weights(
    model: nn.Module,
    forget_batches: Iterable[Batch] | None,
    retain_batches: Iterable[Batch] | None = None,
    *,
    method: str = "wagle",
    gamma: float = DEFAULT_GAMMA,
    reduction: str = "sum",
    seed: int = 0,
    params: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Score every selected parameter tensor; returns ``{name: tensor}`` (param shape).

    Scores are float32, float64 for float64 parameters (``random``: float32 always). For a
    model sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``; parameters are DTensors)
    this is a **collective call**: every rank passes its own share of the calibration batches
    (any split; the sums run over all ranks' instances), gradients are reduce-scattered as
    sums, and every score is a DTensor holding this rank's rows, so no rank holds the full
    scores; :func:`geffect.masking.weight_mask` selects on them with collectives.

    Args:
        model: a causal LM, called through :func:`geffect.engine.model_logits`.
        forget_batches / retain_batches: iterables of batches (``input_ids``, ``attention_mask``,
            ``labels``), consumed once, one batch at a time (a DataLoader or a generator).
            ``retain_batches`` is required by ``wagle`` only; ``magnitude`` and ``random`` need
            no data at all.
        method: a registered scorer (:data:`METHODS` and any added with
            :func:`geffect.attribution.register_scorer`; formulas in :mod:`geffect.attribution`).
        gamma: γ of ``wagle`` (> 0; ``math.inf`` drops the retain term, giving ``snip``).
        reduction: ``"sum"`` over instances (official) or ``"mean"``; see :mod:`geffect.attribution.wagle`.
        seed: seed of ``random``.
        params: parameter names to score (default: every parameter with ``requires_grad``;
            tied parameters appear once, under their first name in ``named_parameters()``).
            ``wanda`` scores only the Linear weights among them.
        progress: show a tqdm bar over calibration batches.

    The model is put in eval mode during the pass (no dropout) and its mode restored.
    """
    score = get_scorer(method)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    reshard(model)  # FSDP2: every managed parameter is its sharded DTensor (no-op otherwise)
    ctx = ScoringContext(model, _select_params(model, params), forget_batches, retain_batches, method=method,
                         gamma=gamma, reduction=reduction, seed=seed, progress=progress)
    return score(ctx)


def attribute_and_save(
    model: nn.Module,
    forget_batches: Iterable[Batch] | None,
    retain_batches: Iterable[Batch] | None,
    output: str | os.PathLike,
    *,
    method: str = "wagle",
    density: float = 0.8,
    gamma: float = DEFAULT_GAMMA,
    reduction: str = "sum",
    scope: str | None = None,
    seed: int = 0,
    progress: bool = True,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Score (:func:`attribute_weights`), keep the top ``density`` (:func:`geffect.masking.weight_mask`), write.

    Files, each written atomically:

    - ``output``: the mask (safetensors, :func:`geffect.masking.save_mask`; the settings and
      ``info`` in its metadata), the ``--mask`` of ``python -m unlearning.train``;
    - ``output`` with suffix ``.summary.csv``: kept fraction per parameter group and module
      type (:func:`geffect.masking.mask_summary`);
    - ``output`` with suffix ``.json``: the settings, ``info``, the overall numbers and timings.

    ``scope`` defaults to the method's registered scope: ``"row"`` for ``wanda`` (WAGLE's Wanda
    baseline ranks per output row), ``"global"`` otherwise. Returns ``{"mask", "summary", "json"}`` paths.
    """
    scope = scope or scorer_scope(method)
    t0 = time.perf_counter()
    scores = attribute_weights(model, forget_batches, retain_batches, method=method, gamma=gamma,
                               reduction=reduction, seed=seed, progress=progress)
    t1 = time.perf_counter()
    mask = weight_mask(scores, density, scope=scope, groups=model if scope == "layer" else None)
    del scores
    t2 = time.perf_counter()
    kept = sum(true_counts(list(mask.values())))  # collective for sharded masks
    total = sum(int(m.numel()) for m in mask.values())
    settings = {"method": method, "density": density, "gamma": gamma, "reduction": reduction,
                "scope": scope, "seed": seed, **(info or {})}
    output = Path(output)
    mask_path = save_mask(mask, output, metadata=settings)  # collective for sharded masks
    summary = mask_summary(mask, model)  # collective for sharded masks
    csv_path, json_path = output.with_suffix(".summary.csv"), output.with_suffix(".json")
    if rank_in(common_group(mask.values())) != 0:  # sharded: rank 0 writes the tables
        return {"mask": mask_path, "summary": csv_path, "json": json_path}
    atomic_write(csv_path, lambda fh: summary.to_csv(fh, index=False))
    record = {**settings, "kept": kept, "total": total, "kept_fraction": kept / total,
              "n_masked_tensors": len(mask), "seconds_attribution": round(t1 - t0, 3),
              "seconds_threshold": round(t2 - t1, 3),
              "groups": {r.name: r.fraction for r in summary.itertuples() if r.view == "group"},
              "module_types": {r.name: r.fraction for r in summary.itertuples() if r.view == "module_type"}}
    atomic_write_json(json_path, record)
    logger.info("kept %d of %d weights (%.4f) in %d tensors; wrote %s, %s, %s",
                kept, total, kept / total, len(mask), mask_path, csv_path, json_path)
    return {"mask": mask_path, "summary": csv_path, "json": json_path}


def _select_params(model: nn.Module, params: Sequence[str] | None) -> dict[str, nn.Parameter]:
    """``{name: parameter}`` to score: ``params`` (checked), or every parameter with ``requires_grad``."""
    all_named = dict(model.named_parameters())
    if params is None:
        named = {n: p for n, p in all_named.items() if p.requires_grad}
        if not named:
            raise ValueError("the model has no parameter with requires_grad=True; pass params=[...]")
        return named
    unknown = [n for n in params if n not in all_named]
    if unknown:
        raise ValueError(f"unknown parameter names {unknown[:5]} (see model.named_parameters())")
    named = {n: all_named[n] for n in params}
    return named

