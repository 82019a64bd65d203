"""Weight attribution for unlearning: which weights should an unlearning method update?

Implements the score of WAGLE (Jia et al., "WAGLE: Strategic Weight Attribution for Effective
and Modular Unlearning in Large Language Models", NeurIPS 2024; official code
OPTML-Group/WAGLE) and the baselines that paper compares against. Every score is "higher =
more worth updating"; :func:`geffect.masking.weight_mask` keeps the top ``density`` fraction.

With g_f = Σ_{x in forget} ∇R(x) and g_r = Σ_{x in retain} ∇R(x), R(x) the mean answer NLL of
one instance (:func:`geffect.losses.answer_nll`), the scores per weight j are

====================  ============================================================
``wagle``             |(θ_j − g_r,j / γ) · g_f,j|
``snip``              |θ_j · g_f,j|                    (the γ → ∞ limit of ``wagle``)
``gradient``          |g_f,j|                          (SalUn-style gradient saliency)
``magnitude``         |θ_j|
``random``            U(0, 1), seeded and deterministic
``wanda``             |W_ij| · ‖X_j‖₂ for Linear weights (X_j: input feature j over all
                      non-padding forget tokens); no other tensor is scored
====================  ============================================================

``reduction="sum"`` (the default) follows the official code, which sums batch-size-1
gradients; ``"mean"`` divides g_f and g_r by their instance counts. The retain term of
``wagle`` scales as g_r/γ, so switching sum → mean is the same as multiplying γ by the number
of retain instances: γ must be chosen together with the reduction. The default γ = 1e-6 is
the value in the official configs (its argparse default is 1e-3); with summed gradients the
retain term then dominates and the score is close to |g_r · g_f| / γ.

Cost: one forward + backward pass per calibration batch over the forget set and (``wagle``)
one over the retain set. The per-instance sum needs no per-instance loop: the gradient of
Σ_i R(x_i) over a padded batch equals the sum of the per-instance gradients. Gradients are
added into float32 accumulators (float64 for float64 parameters) by tensor hooks as autograd
produces them, so beyond the model and the activations at most two accumulators are alive
(g_f and g_r) and ``.grad`` of the model is never touched.

Usage::

    scores = attribute_weights(model, forget_loader, retain_loader, method="wagle")
    mask = weight_mask(scores, density=0.8)       # geffect.masking

or, scoring, thresholding and writing mask + summaries in one call (what
``python -m unlearning.attribute`` runs)::

    paths = attribute_and_save(model, forget_loader, retain_loader, "masks/wagle_0.8.safetensors")
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from geffect.engine import model_logits
from geffect.io import atomic_write, atomic_write_json
from geffect.losses import answer_nll, compute_dtype
from geffect.masking import mask_summary, save_mask, weight_mask
from geffect.distributed import (all_reduce_sum, comm_device, common_group, is_dtensor, layout, local, rank_in, reshard,
                            true_counts, wrap_like)


logger = logging.getLogger(__name__)

METHODS = ("wagle", "snip", "gradient", "magnitude", "random", "wanda")
_GRADIENT_METHODS = ("wagle", "snip", "gradient")
REDUCTIONS = ("sum", "mean")
#: γ (``mu``) in the official WAGLE configs; the official argparse default is 1e-3.
DEFAULT_GAMMA = 1e-6

Batch = Mapping[str, torch.Tensor]

__all__ = ["DEFAULT_GAMMA", "METHODS", "REDUCTIONS", "accumulate_gradients", "attribute_and_save", "attribute_weights"]


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
        method: one of :data:`METHODS` (formulas in the module docstring).
        gamma: γ of ``wagle`` (> 0; ``math.inf`` drops the retain term, giving ``snip``).
        reduction: ``"sum"`` over instances (official) or ``"mean"``; see the module docstring.
        seed: seed of ``random``.
        params: parameter names to score (default: every parameter with ``requires_grad``;
            tied parameters appear once, under their first name in ``named_parameters()``).
            ``wanda`` scores only the Linear weights among them.
        progress: show a tqdm bar over calibration batches.

    The model is put in eval mode during the pass (no dropout) and its mode restored.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {METHODS}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if method == "wagle" and not gamma > 0:
        raise ValueError(f"gamma must be > 0 (got {gamma}); use math.inf for the SNIP limit")
    reshard(model)  # FSDP2: every managed parameter is its sharded DTensor (no-op otherwise)
    named = _select_params(model, params)

    if method == "magnitude":
        return {n: wrap_like(local(p).detach().abs().to(compute_dtype(p.dtype)), p) for n, p in named.items()}
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        # drawn on CPU in named order, full-shaped, so the scores do not depend on the device or
        # on the sharding (a sharded parameter keeps its own rows of the full draw)
        return {n: wrap_like(_local_rows(torch.rand(p.shape, generator=gen), p).to(local(p).device), p)
                for n, p in named.items()}

    if forget_batches is None:
        raise ValueError(f"method={method!r} needs forget_batches (the calibration data)")
    if method == "wanda":
        if retain_batches is not None:
            logger.info("wanda uses forget activations only; retain_batches is ignored")
        return _wanda_scores(model, named, forget_batches, progress=progress)
    if method == "wagle" and retain_batches is None and not math.isinf(gamma):
        raise ValueError(
            "method='wagle' needs retain_batches (the retain gradient g_r); "
            "pass retain data, or use method='snip' for the score without the retain term"
        )

    g_f, n_f = accumulate_gradients(model, named, forget_batches, progress=progress, desc="forget")
    if n_f == 0:
        raise ValueError("forget_batches is empty: at least one calibration instance is needed")
    if reduction == "mean":
        for g in g_f.values():
            g.div_(n_f)

    # scores are computed in place in the accumulators (float32, float64 for float64 parameters);
    # for a sharded parameter they are this rank's rows, returned as a DTensor laid out like it
    scores: dict[str, torch.Tensor] = {}
    if method == "gradient":
        for n, p in named.items():
            scores[n] = wrap_like(g_f.pop(n).abs_(), p)
        return scores
    if method == "snip" or math.isinf(gamma):
        for n, p in named.items():
            g = g_f.pop(n)
            scores[n] = wrap_like(g.mul_(local(p).detach()).abs_(), p)
        return scores

    # wagle: |(θ − g_r/γ) · g_f|, computed in place in the g_f accumulator
    g_r, n_r = accumulate_gradients(model, named, retain_batches, progress=progress, desc="retain")
    if n_r == 0:
        raise ValueError("retain_batches is empty: wagle needs at least one retain instance")
    if reduction == "mean":
        for g in g_r.values():
            g.div_(n_r)
    for n, p in named.items():
        g, r = g_f.pop(n), g_r.pop(n)
        r.div_(-gamma).add_(local(p).detach())  # θ − g_r/γ, in the accumulator dtype
        scores[n] = wrap_like(g.mul_(r).abs_(), p)
        del r
    return scores


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

    ``scope`` defaults to ``"row"`` for ``wanda`` (WAGLE's Wanda baseline ranks per output row)
    and ``"global"`` otherwise. Returns ``{"mask", "summary", "json"}`` paths.
    """
    scope = scope or ("row" if method == "wanda" else "global")
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


def accumulate_gradients(
    model: nn.Module,
    named: Mapping[str, nn.Parameter],
    batches: Iterable[Batch],
    *,
    progress: bool = False,
    desc: str = "calibration",
    out: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """Σ over all instances of ∇R(x) for the given parameters; returns (gradients, count).

    The gradients are float32 (float64 for float64 parameters), added into ``out`` when given
    (to continue a sum) or into fresh zero tensors; ``.grad`` is untouched. One backward pass
    per batch, of Σ_i R(x_i).

    FSDP2 models (DTensor parameters): a collective call; the sums and the count run over the
    batches of all ranks and each returned gradient is this rank's rows (a plain local tensor
    shaped like ``param.to_local()``); see :func:`_accumulate_sharded`.
    """
    if any(is_dtensor(p) for p in named.values()):
        return _accumulate_sharded(model, named, batches, progress=progress, desc=desc, out=out)
    if out is None:
        out = {n: torch.zeros(p.shape, dtype=compute_dtype(p.dtype), device=p.device)
               for n, p in named.items()}
    acc = out
    params = list(named.values())
    # A tensor hook on a leaf sees its full gradient (all uses summed, e.g. tied embeddings)
    # before autograd.grad captures it. Adding it into the accumulator and handing autograd a
    # stride-0 zero keeps at most one parameter's gradient alive at a time.
    handles = [p.register_hook(_accumulate_hook(acc[n])) for n, p in named.items()]
    count = 0
    was_training = model.training
    model.eval()
    try:
        for batch in _progress(batches, progress, desc):
            input_ids, attention_mask, labels = _unpack(batch, local(params[0]).device)
            logits = model_logits(model, input_ids, attention_mask)  # (B, T, V)
            risk = answer_nll(logits, labels)  # (B,)
            torch.autograd.grad(risk.sum(), params, allow_unused=True)
            count += int(risk.shape[0])
            del logits, risk
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return acc, count


def _accumulate_sharded(model, named, batches, *, progress, desc, out):
    """:func:`accumulate_gradients` for FSDP2 (``fully_shard``) models.

    Autograd runs on FSDP2's unsharded parameters, and FSDP2 reduce-scatters each gradient
    into the sharded parameter's ``.grad`` (a DTensor) after the backward of its module; tensor
    hooks on the sharded parameters would never fire. So each batch runs a plain
    ``backward()`` of Σ_i R(x_i) with FSDP2 set to **sum** over ranks (gradient divide factor 1,
    sum-only collectives), this rank's rows of every ``.grad`` are added into the local
    accumulators (float32, float64 for float64 parameters), and ``.grad`` is cleared. The
    model's own ``.grad`` values, FSDP2's reduction settings and the train/eval mode are restored
    afterwards. Ranks may hold different numbers of batches: a rank that has run out joins the
    collectives of the others with a zero-weighted one-token pass. Gradients arrive in FSDP2's
    reduce dtype: with a bf16 ``MixedPrecisionPolicy`` set ``reduce_dtype=torch.float32``.
    """
    fsdp_modules = reshard(model)
    if not fsdp_modules:
        raise ValueError("the parameters are DTensors but no module is wrapped by torch.distributed.fsdp.fully_shard; "
                         "only FSDP2 sharding is supported (tensor-parallel DTensor parameters are not)")
    group = common_group(named.values())
    for p in named.values():
        layout(p, group)  # raises for unsupported placements
    if out is None:
        out = {n: torch.zeros(local(p).shape, dtype=compute_dtype(p.dtype), device=local(p).device)
               for n, p in named.items()}
    device = local(next(iter(named.values()))).device
    all_params = list(model.parameters())
    saved_grads = [(p, p.grad) for p in all_params]
    restore = _fsdp_sum_reduction(fsdp_modules)
    was_training = model.training
    count = 0
    model.eval()
    try:
        for p in all_params:
            p.grad = None
        for batch in _synced(_progress(batches, progress, desc), group):
            if batch is None:  # this rank has no batch left, the others have
                ids = torch.zeros((1, 1), dtype=torch.long, device=device)
                (model_logits(model, ids, None).float().sum() * 0).backward()
            else:
                input_ids, attention_mask, labels = _unpack(batch, device)
                risk = answer_nll(model_logits(model, input_ids, attention_mask), labels)  # (B,)
                risk.sum().backward()
                count += int(risk.shape[0])
                del risk
            for n, p in named.items():
                if p.grad is not None:
                    out[n].add_(local(p.grad))
            for p in all_params:
                p.grad = None
    finally:
        restore()
        reshard(model)
        for p, g in saved_grads:
            p.grad = g
        model.train(was_training)
    for n, p in named.items():  # a parameter FSDP2 does not manage: its .grad was this rank's only
        if not is_dtensor(p):
            all_reduce_sum(out[n], group)
    total = torch.tensor([count], dtype=torch.int64, device=comm_device(group, next(iter(named.values()))))
    return out, int(all_reduce_sum(total, group))


def _fsdp_sum_reduction(modules) -> Callable[[], None]:
    """Make FSDP2 reduce gradients as plain sums over ranks; returns a function restoring the
    previous settings (read from FSDP2's parameter groups)."""
    saved = []
    for m in modules:
        state = m._get_fsdp_state()
        for group in getattr(state, "_fsdp_param_groups", None) or []:
            saved.append((group, getattr(group, "gradient_divide_factor", None),
                          getattr(group, "force_sum_reduction_for_comms", False)))
        m.set_gradient_divide_factor(1.0)
        m.set_force_sum_reduction_for_comms(True)  # no AVG / PREMUL_SUM op: an exact sum

    def restore() -> None:
        for group, factor, force in saved:
            group.gradient_divide_factor = factor
            group.force_sum_reduction_for_comms = force

    return restore


def _synced(batches: Iterable[Any], group) -> Iterator[Any]:
    """Yield this rank's batches, then ``None`` while other ranks still have batches."""
    it = iter(batches)
    while True:
        batch = next(it, None)
        flag = torch.tensor([0 if batch is None else 1], dtype=torch.int64, device=comm_device(group, torch.empty(0)))
        if int(all_reduce_sum(flag, group)) == 0:
            return
        yield batch


def _local_rows(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The rows of a full-shaped tensor that this rank holds of ``like`` (all of them if not sharded)."""
    if not is_dtensor(like):
        return full
    lay = layout(like)
    return full[lay.start:lay.stop] if lay.sharded else full


def linear_weights(model: nn.Module, named: Mapping[str, nn.Parameter] | None = None) -> dict[str, nn.Module]:
    """The Linear-like modules that Wanda scores: ``{weight name: module}``.

    Every ``nn.Linear`` and transformers ``Conv1D`` (GPT-2; weight stored (in, out)) except the
    output head (``model.get_output_embeddings()``), i.e. the Linear layers of the decoder
    blocks for the usual HF models. Restricted to ``named`` when given.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out: dict[str, nn.Module] = {}
    for mname, module in model.named_modules():
        if module is head or not _is_linear_like(module):
            continue
        wname = f"{mname}.weight" if mname else "weight"
        if named is None or wname in named:
            out[wname] = module
    return out


def _wanda_scores(model, named, batches, *, progress):
    """|W_ij| · ‖X_j‖₂ with ‖X_j‖ over every non-padding forget token (Sun et al. 2024).

    FSDP2 models: the squared feature norms are summed over ranks (all-reduce) and each rank
    scores its own rows of the weights.
    """
    modules = linear_weights(model, named)
    if not modules:
        raise ValueError("wanda found no nn.Linear / Conv1D weight among the selected parameters")
    group = common_group(named[n] for n in modules)
    sharded = any(is_dtensor(named[n]) for n in modules)
    sq = {n: None for n in modules}  # Σ_tokens x_j², (in_features,)
    current_mask: list[torch.Tensor | None] = [None]
    capturing = [True]

    def make_hook(name):
        dtype = compute_dtype(named[name].dtype)

        def hook(module, inputs, output):
            if not capturing[0]:
                return
            x = inputs[0]  # (B, T, in)
            m = current_mask[0]
            if m is not None and x.dim() == 3 and m.shape == x.shape[:2]:
                x = x[m]  # (n_tokens, in) non-padding tokens only
            x = x.reshape(-1, x.shape[-1]).to(dtype)  # (n_tokens, in)
            s = x.pow(2).sum(dim=0)  # (in,)
            sq[name] = s if sq[name] is None else sq[name].add_(s)
        return hook

    handles = [mod.register_forward_hook(make_hook(n)) for n, mod in modules.items()]
    device = local(next(iter(named.values()))).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            stream = _progress(batches, progress, "forget")
            for batch in (_synced(stream, group) if sharded else stream):
                if batch is None:  # FSDP2: this rank has no batch left, the others have
                    capturing[0] = False
                    model_logits(model, torch.zeros((1, 1), dtype=torch.long, device=device), None)
                    capturing[0] = True
                    continue
                input_ids, attention_mask, _ = _unpack(batch, device)
                current_mask[0] = attention_mask.bool() if attention_mask is not None else None
                model_logits(model, input_ids, attention_mask)  # the hooks record the inputs
    finally:
        for h in handles:
            h.remove()
        if sharded:
            reshard(model)  # a forward without backward leaves FSDP2's root unsharded
        model.train(was_training)

    scores = {}
    for n, mod in modules.items():
        w = local(named[n]).detach()
        if sharded:  # Σ over every rank's tokens; a rank without tokens contributes zeros
            in_features = named[n].shape[0] if _is_conv1d(mod) else named[n].shape[1]
            if sq[n] is None:
                sq[n] = torch.zeros(in_features, dtype=compute_dtype(w.dtype), device=w.device)
            all_reduce_sum(sq[n], group)
        elif sq[n] is None:
            raise ValueError(f"wanda: module {n!r} was never called during the calibration pass")
        norm = sq[n].sqrt()  # (in,)
        w = w.abs().to(norm.dtype)
        # nn.Linear weight is (out, in); Conv1D weight is (in, out), sharded rows = input features
        if _is_conv1d(mod):
            s = w * _local_rows(norm, named[n]).unsqueeze(1)
        else:
            s = w * norm.unsqueeze(0)
        scores[n] = wrap_like(s, named[n])
    return scores


def _accumulate_hook(acc: torch.Tensor):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        acc.add_(grad)
        return torch.zeros((), dtype=grad.dtype, device=grad.device).expand_as(grad)
    return hook


def _select_params(model: nn.Module, params: Sequence[str] | None) -> dict[str, nn.Parameter]:
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


def _unpack(batch: Batch, device: torch.device):
    try:
        input_ids, labels = batch["input_ids"], batch["labels"]
    except KeyError as err:
        raise ValueError(f"a calibration batch needs input_ids and labels; missing {err}") from None
    attention_mask = batch.get("attention_mask")
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    return input_ids.to(device), attention_mask, labels.to(device)


def _progress(batches: Iterable[Any], enabled: bool, desc: str):
    if not enabled:
        return batches
    total = len(batches) if hasattr(batches, "__len__") else None
    return tqdm(batches, total=total, desc=f"attribution ({desc})", unit="batch")


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _is_linear_like(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return (isinstance(module, nn.Linear) or _is_conv1d(module)) and isinstance(w, torch.Tensor) and w.dim() == 2
