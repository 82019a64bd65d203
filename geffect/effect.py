"""G-effects and PG-effects (Wang et al., ICLR 2025, "Rethinking LLM Unlearning Objectives:
A Gradient Perspective and Go Beyond").

**G-effect** (Definition 1) of an unlearning objective L_u on probe data D::

    e = < grad R(D), grad L_u(B_u) >

with R(x) the mean answer NLL of one instance and R(D) the mean of R(x) over the probe
instances (each instance counts once). To first order, one SGD step of learning rate lr on
L_u changes R(D) by ``-lr * e``: **e > 0 means the objective lowers the probe risk, e < 0
means it raises it.** A good unlearning objective has clearly negative e on forget data and
e >= 0 on retain data. :func:`gradient_effect` returns the per-instance, per-group split
``E[i, g] = <grad_g R(x_i), grad_g L_u>`` whose row-mean-of-sums is e; no learning-rate factor
and no normalisation in the raw values (cosine views are extras).

**PG-effect** (Eq. 5): objectives whose gradient is ``E_s w_s grad log p(y_s | x_s)`` have
G-effect ``E_s w_s PG(s)`` with ``PG(s) = < grad R(D), grad log p(y_s | x_s) >``.
:func:`instance_effect` returns ``PG[s, g]``. Sign: a step that *lowers* the likelihood of
unlearning instance s (descent on ``w log p(y_s|x_s)``, w > 0) changes R(D) by
``-lr * w * PG(s)``; PG(s) > 0 means unlearning s lowers the probe risk, PG(s) < 0 that it
raises it (collateral damage when D is retain data).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from geffect.distributed import is_dtensor, is_sharded, rank_world, sum_across_ranks
from geffect.engine import model_logits, per_instance_dots
from geffect.groups import parameter_groups
from geffect.losses import answer_nll

__all__ = ["GEffectResult", "flat_gradient", "gradient_effect", "instance_effect", "direction_norm", "risk_gradient"]


@dataclass
class GEffectResult:
    """A G-effect matrix ``[N, G]`` (rows: probe or unlearning instances; columns: groups).

    ``per_instance`` = row sums (N,); ``per_group`` = column means (G,); ``total`` = mean of
    the row sums (= sum of ``per_group``) = the G-effect e of Definition 1.
    """

    matrix: torch.Tensor
    groups: list[str]
    instance_ids: list[Any] | None = None
    direction_norm: float | None = None
    probe_grad_norm: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_instance(self) -> torch.Tensor:
        return self.matrix.sum(dim=1)  # (N,)

    @property
    def per_group(self) -> torch.Tensor:
        return self.matrix.mean(dim=0)  # (G,)

    @property
    def total(self) -> float:
        return float(self.per_instance.mean()) if self.matrix.shape[0] else 0.0

    @property
    def normalized(self) -> torch.Tensor | None:
        """``matrix / ||d||``: projections of per-instance gradients on the unit direction."""
        if not self.direction_norm:
            return None
        return self.matrix / self.direction_norm

    @property
    def cosine(self) -> float | None:
        """cos(grad R(D), d) = total / (||grad R(D)|| ||d||), when both norms are known."""
        if not self.direction_norm or not self.probe_grad_norm:
            return None
        return self.total / (self.direction_norm * self.probe_grad_norm)

    def to_frame(self):
        """Tidy ``pandas.DataFrame`` with columns instance, group, value."""
        import pandas as pd

        m = self.matrix.detach().cpu().double()
        ids = self.instance_ids if self.instance_ids is not None else list(range(m.shape[0]))
        return pd.DataFrame(
            {
                "instance": [i for i in ids for _ in self.groups],
                "group": list(self.groups) * len(ids),
                "value": m.reshape(-1).tolist(),  # (N*G,), row-major: instance-major
            }
        )


def direction_norm(direction: Mapping[str, torch.Tensor]) -> float:
    """Euclidean norm of a direction dict, accumulated in float64.

    DTensor entries (FSDP2 shards) contribute the squares of the whole tensor: the local sums
    are combined by the DTensor reduction (a collective: every rank must call this).
    """
    total = 0.0
    for v in direction.values():
        sq = v.detach().to(torch.float64).pow(2).sum()
        total += float(sq.full_tensor() if is_dtensor(sq) else sq)
    return math.sqrt(total)


def _loss_of(out: Any) -> torch.Tensor:
    loss = out.loss if hasattr(out, "loss") else out
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("the objective must return a scalar tensor or an object with a scalar `.loss`")
    return loss.reshape(())


def flat_gradient(
    model: nn.Module,
    loss_or_fn: torch.Tensor | Callable[[nn.Module], Any],
    *,
    params: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Gradient of a scalar as a direction dict (parameter name -> tensor), ``.grad`` untouched.

    ``loss_or_fn`` is a scalar tensor already built from ``model`` (differentiated w.r.t. the
    parameters that require grad), or a callable ``fn(model)`` returning a scalar or an object
    with ``.loss``; the callable runs with ``params`` (default: the trainable parameters, or
    every parameter if none is trainable) requiring grad, in the model's current mode.
    Parameters the loss does not reach are omitted (they count as zero).
    """
    named = dict(model.named_parameters())
    if isinstance(loss_or_fn, torch.Tensor):
        names = [n for n, p in named.items() if p.requires_grad] if params is None else list(params)
        loss = loss_or_fn.reshape(())
        grads = torch.autograd.grad(loss, [named[n] for n in names], allow_unused=True)
        return {n: g.detach() for n, g in zip(names, grads) if g is not None}
    if params is None:
        names = [n for n, p in named.items() if p.requires_grad] or list(named)
    else:
        names = list(params)
    flags = [(p, p.requires_grad) for p in named.values()]
    try:
        chosen = set(names)
        for n, p in named.items():
            p.requires_grad_(n in chosen)
        with torch.enable_grad():
            loss = _loss_of(loss_or_fn(model))
            grads = torch.autograd.grad(loss, [named[n] for n in names], allow_unused=True)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return {n: g.detach() for n, g in zip(names, grads) if g is not None}


def _eval_gradient(model: nn.Module, fn: Callable[[nn.Module], Any]) -> dict[str, torch.Tensor]:
    """flat_gradient of ``fn`` with the model in eval mode (dropout off), modes restored."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        return flat_gradient(model, fn)
    finally:
        for m, mode in modes:
            m.training = mode


def _probe_risk(batch: Mapping[str, torch.Tensor], total: int | None = None) -> Callable[[nn.Module], torch.Tensor]:
    """R(D): mean over instances of the mean answer NLL (``total``: divide the sum by it instead)."""

    def risk(model: nn.Module) -> torch.Tensor:
        device = next(model.parameters()).device
        am = batch.get("attention_mask")
        logits = model_logits(model, batch["input_ids"].to(device), None if am is None else am.to(device))
        nll = answer_nll(logits, batch["labels"].to(device))  # (B,)
        return nll.mean() if total is None else nll.sum() / total

    return risk


def _sharded_gradient(model: nn.Module, fn: Callable[[nn.Module], Any], factor: float) -> dict[str, torch.Tensor]:
    """``factor`` x the rank mean of grad fn on an FSDP2 model, as DTensor shards; ``.grad`` restored.

    FSDP2 keeps the parameters out of the autograd graph (they are all-gathered per block), so
    the gradient is taken by a backward into ``.grad``: the training gradient is set aside,
    FSDP2 reduce-scatters (a mean over ranks) the new one, and the training gradient is put
    back. Every rank must call this together.
    """
    params = dict(model.named_parameters())
    saved = {n: p.grad for n, p in params.items()}
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p in params.values():
            p.grad = None
        model.eval()
        with torch.enable_grad():
            (_loss_of(fn(model)) * factor).backward()
        return {n: p.grad.detach() for n, p in params.items() if p.grad is not None}
    finally:
        for n, p in params.items():
            p.grad = saved[n]
        for m, mode in modes:
            m.training = mode


def risk_gradient(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    total: int | None = None,
    sum_ranks: bool = False,
    scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """grad R(D) of a probe batch (instance mean of the answer NLL), eval mode, ``.grad`` untouched.

    ``total``: differentiate ``scale * sum_i R(x_i) / total`` instead (one share of a larger
    set); ``sum_ranks``: add the shares of every rank of the process group, so that ranks
    holding disjoint shares of a set of ``total`` instances all get grad R(D) of the set (an
    all-reduce; for an FSDP2 model the sum of the sharded gradients, which stay sharded).
    """
    if is_sharded(model):
        if not sum_ranks:
            raise ValueError("an FSDP2 (sharded) model takes gradients across ranks: pass sum_ranks=True")
        return _sharded_gradient(model, _probe_risk(batch, total), scale * rank_world()[1])
    fn = _probe_risk(batch, total)
    direction = _eval_gradient(model, fn if scale == 1.0 else (lambda m: fn(m) * scale))
    if sum_ranks:
        sum_across_ranks(direction)
    return direction


def _names(groups: Mapping[str, Sequence[str]] | None, model: nn.Module) -> Mapping[str, Sequence[str]]:
    return parameter_groups(model) if groups is None else groups


def gradient_effect(
    model: nn.Module,
    objective: Callable[..., Any],
    unlearn_inputs: Any,
    probe_batch: Mapping[str, torch.Tensor],
    *,
    ref_model: nn.Module | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    engine: str = "ghost",
    cosine: bool = False,
    instance_ids: Sequence[Any] | None = None,
) -> GEffectResult:
    """G-effect of ``objective`` on ``probe_batch``, per probe instance and parameter group.

    The direction is ``d = grad objective(model, unlearn_inputs, ref_model)`` (a tensor or an
    object with ``.loss``; eval mode, trainable parameters). ``E[i, g] = <grad_g R(x_i), d_g>``;
    ``result.total`` is e of Definition 1: > 0 means one SGD step lowers the probe risk.
    ``cosine=True`` also computes ||grad R(D)|| (one more backward) for ``result.cosine``.
    """
    groups = _names(groups, model)
    direction = _eval_gradient(model, lambda m: objective(m, unlearn_inputs, ref_model))
    matrix = per_instance_dots(model, probe_batch, direction, loss="answer_nll", groups=groups, engine=engine)
    probe_norm = direction_norm(_eval_gradient(model, _probe_risk(probe_batch))) if cosine else None
    return GEffectResult(
        matrix=matrix,
        groups=list(groups),
        instance_ids=list(instance_ids) if instance_ids is not None else None,
        direction_norm=direction_norm(direction),
        probe_grad_norm=probe_norm,
    )


def instance_effect(
    model: nn.Module,
    unlearn_batch: Mapping[str, torch.Tensor],
    probe_batch: Mapping[str, torch.Tensor],
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    engine: str = "ghost",
    instance_ids: Sequence[Any] | None = None,
) -> GEffectResult:
    """PG-effects (Eq. 5): ``PG[s, g] = <grad_g log p(y_s | x_s), grad_g R(D_probe)>``.

    Rows are the unlearning instances of ``unlearn_batch``; the fixed direction is the
    gradient of the probe set's instance-mean risk. PG(s) > 0: lowering the likelihood of s
    lowers the probe risk; PG(s) < 0: it raises it.
    """
    groups = _names(groups, model)
    direction = risk_gradient(model, probe_batch)
    matrix = per_instance_dots(model, unlearn_batch, direction, loss="logprob", groups=groups, engine=engine)
    return GEffectResult(
        matrix=matrix,
        groups=list(groups),
        instance_ids=list(instance_ids) if instance_ids is not None else None,
        direction_norm=direction_norm(direction),
    )
