"""Retain terms L_r that compose with any forget term: none / nll / kl.

* ``nll``: flat mean NLL over the retain micro-batch's answer tokens (GradDiff; minimised).
* ``kl``:  KL(p_ref || p_θ) per predicted position, Σ_v p_ref(v) (log p_ref(v) − log p_θ(v)).
  ``kl_tokens="answer"`` (our default) averages it over the retain *answer* tokens, the same
  tokens the NLL term uses. ``kl_tokens="all"`` reproduces open-unlearning / the G-effect code
  (``F.kl_div(..., reduction="batchmean")`` on logits flattened to (B·T, V)): the mean over every
  logit position, prompt, padding and the last position included.
* ``repr`` (RMU only, see :mod:`unlearning.objectives.rmu`).
"""
from __future__ import annotations

import torch

from geffect.losses import answer_mask, compute_dtype
from unlearning.objectives.forward import batch_logits, batch_logprobs, count_answer_tokens, reference_logits

RETAIN_LOSSES = ("none", "nll", "kl")


def retain_nll(model, batch: dict) -> torch.Tensor:
    """Flat mean NLL over the answer tokens of ``batch``."""
    lp, mask = batch_logprobs(model, batch)  # (B, T), (B, T)
    return -(lp * mask).sum() / count_answer_tokens(mask, "retain")


def retain_kl(model, ref_model, batch: dict, *, kl_tokens: str = "answer") -> torch.Tensor:
    """KL(p_ref || p_θ) averaged over retain answer tokens (or all logit positions)."""
    logits = batch_logits(model, batch)  # (B, T, V)
    ref_logits = reference_logits(ref_model, batch)
    dt = compute_dtype(logits.dtype)
    lq = torch.log_softmax(logits.to(dt), dim=-1)  # θ
    lp = torch.log_softmax(ref_logits.to(dt), dim=-1)  # ref
    kl = (lp.exp() * (lp - lq)).sum(-1)  # (B, T): position s predicts token s+1
    if kl_tokens == "all":
        return kl.mean()
    mask = answer_mask(batch["labels"])  # (B, T) aligned with labels
    aligned = torch.zeros_like(kl)
    aligned[:, 1:] = kl[:, :-1]  # column t: KL of the prediction of labels[:, t]
    return (aligned * mask).sum() / count_answer_tokens(mask, "retain")


def retain_term(kind: str, model, inputs: dict, ref_model, *, kl_tokens: str = "answer") -> torch.Tensor | None:
    """L_r of kind ``kind`` (one of :data:`RETAIN_LOSSES`) on ``inputs["retain"]``; None for "none"."""
    if kind == "none":
        return None
    if "retain" not in inputs or inputs["retain"] is None:
        raise ValueError(f"retain_loss={kind!r} needs inputs['retain'] (a retain batch); pass one or use retain_loss='none'")
    if kind == "nll":
        return retain_nll(model, inputs["retain"])
    if kind == "kl":
        if ref_model is None:
            raise ValueError("retain_loss='kl' needs a reference model (ref_model=)")
        return retain_kl(model, ref_model, inputs["retain"], kl_tokens=kl_tokens)
    raise ValueError(f"unknown retain_loss {kind!r}; valid: none, nll, kl")
