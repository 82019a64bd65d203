"""Calibration passes of weight attribution: gradient sums and the batch loop shared by the scorers.

:func:`accumulate_gradients` sums ∇R(x) over every calibration instance, R(x) the mean answer
NLL of one instance (:func:`geffect.losses.answer_nll`). The per-instance sum needs no
per-instance loop: the gradient of Σ_i R(x_i) over a padded batch equals the sum of the
per-instance gradients. Gradients are added into float32 accumulators (float64 for float64
parameters) by tensor hooks as autograd produces them, so beyond the model and the activations
one accumulator per summed set is alive and ``.grad`` of the model is never touched. On an
FSDP2 model the sums run over every rank's batches (:func:`_accumulate_sharded`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from geffect.distributed import all_reduce_sum, comm_device, common_group, is_dtensor, layout, local, reshard
from geffect.engine import model_logits
from geffect.losses import answer_nll, compute_dtype

__all__ = ["Batch", "accumulate_gradients", "progress_bar", "synced", "unpack"]

Batch = Mapping[str, torch.Tensor]


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
        for batch in progress_bar(batches, progress, desc):
            input_ids, attention_mask, labels = unpack(batch, local(params[0]).device)
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
    modules = reshard(model)
    if not modules:
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
    restore = _fsdp_sum_reduction(modules)
    was_training = model.training
    count = 0
    model.eval()
    try:
        for p in all_params:
            p.grad = None
        for batch in synced(progress_bar(batches, progress, desc), group):
            if batch is None:  # this rank has no batch left, the others have
                ids = torch.zeros((1, 1), dtype=torch.long, device=device)
                (model_logits(model, ids, None).float().sum() * 0).backward()
            else:
                input_ids, attention_mask, labels = unpack(batch, device)
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


def synced(batches: Iterable[Any], group) -> Iterator[Any]:
    """Yield this rank's batches, then ``None`` while other ranks still have batches."""
    it = iter(batches)
    while True:
        batch = next(it, None)
        flag = torch.tensor([0 if batch is None else 1], dtype=torch.int64, device=comm_device(group, torch.empty(0)))
        if int(all_reduce_sum(flag, group)) == 0:
            return
        yield batch


def _accumulate_hook(acc: torch.Tensor):
    """Tensor hook adding a parameter's gradient into ``acc`` and handing autograd a stride-0 zero."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        acc.add_(grad)
        return torch.zeros((), dtype=grad.dtype, device=grad.device).expand_as(grad)
    return hook


def unpack(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``(input_ids, attention_mask or None, labels)`` of a calibration batch, on ``device``."""
    try:
        input_ids, labels = batch["input_ids"], batch["labels"]
    except KeyError as err:
        raise ValueError(f"a calibration batch needs input_ids and labels; missing {err}") from None
    attention_mask = batch.get("attention_mask")
    if attention_mask is not None:
        attention_mask = attention_mask.to(device)
    return input_ids.to(device), attention_mask, labels.to(device)


def progress_bar(batches: Iterable[Any], enabled: bool, desc: str) -> Iterable[Any]:
    """``batches`` behind a tqdm bar named ``attribution (desc)`` when ``enabled``."""
    if not enabled:
        return batches
    total = len(batches) if hasattr(batches, "__len__") else None
    return tqdm(batches, total=total, desc=f"attribution ({desc})", unit="batch")
