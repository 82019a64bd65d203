"""Teacher-forced likelihood metrics: answer probability, probability with options, exact memorisation.

All functions follow the token conventions of :mod:`geffect.losses`: a batch is a dict of
right-padded ``input_ids``, ``attention_mask`` and ``labels`` (B, T) with ``-100`` on prompt and
padding tokens, and every token-level tensor is aligned with ``labels``.

Definitions (TOFU, Maini et al. 2024; open-unlearning metric registry):

* probability            P(y | x) = exp(-mean answer NLL)                       (per instance)
* probability w/ options P(true) / (P(true) + sum_j P(perturbed_j)), each P length-normalised
                          (TOFU's probability for the real-authors and world-facts sets)
* exact memorisation     fraction of answer tokens where the teacher-forced argmax is the label
                          (a trailing EOS token is excluded, see :func:`content_mask`)

Model-level functions ``f(model, batch) -> Tensor[N]`` run one forward pass under ``no_grad``;
the ``*_from_logits`` variants let a caller reuse one forward pass for several metrics.
"""
from __future__ import annotations

import torch

from geffect.engine import model_logits
from geffect.losses import answer_mask, answer_nll, compute_dtype

__all__ = [
    "forward_logits",
    "content_mask",
    "argmax_matches",
    "answer_probability",
    "probability_from_nll",
    "probability_with_options",
    "exact_memorization",
    "exact_memorization_from_logits",
    "on_model",
    "resolve_eos_token_id",
]


def forward_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits (B, T, V) of ``model`` on ``batch``; only ``input_ids``/``attention_mask`` are passed."""
    device = next(model.parameters()).device
    return model_logits(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))


def resolve_eos_token_id(model: torch.nn.Module, eos_token_id: int | None = None) -> int | None:
    """The EOS id to exclude from answers: the argument, else the model's config (first if a list)."""
    if eos_token_id is not None:
        return int(eos_token_id)
    cfg = getattr(model, "config", None)
    eos = getattr(cfg, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    return None if eos is None else int(eos)


def content_mask(labels: torch.Tensor, eos_token_id: int | None = None) -> torch.Tensor:
    """(B, T) bool answer mask without the answer's trailing EOS token.

    The tokenizer appends EOS to every answer (``unlearning.data.tokenize_example``); extraction
    strength and exact memorisation score the answer *text*, so the last answer token is dropped
    when it equals ``eos_token_id``. With ``eos_token_id=None`` this is :func:`answer_mask`.
    """
    mask = answer_mask(labels)  # (B, T)
    if eos_token_id is None:
        return mask
    B, T = labels.shape
    pos = torch.arange(T, device=labels.device).expand(B, T)  # (B, T)
    last = torch.where(mask, pos, torch.full_like(pos, -1)).amax(dim=1)  # (B,)
    rows = torch.nonzero(last >= 0).flatten()
    is_eos = labels[rows, last[rows]] == eos_token_id
    mask = mask.clone()
    mask[rows[is_eos], last[rows[is_eos]]] = False
    return mask


def argmax_matches(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T) bool, aligned with labels: the teacher-forced argmax at t-1 equals ``labels[:, t]``.

    False at column 0 and wherever ``labels`` is -100.
    """
    B, T, _ = logits.shape
    out = torch.zeros(B, T, dtype=torch.bool, device=logits.device)
    if T < 2:
        return out
    pred = logits[:, :-1].argmax(dim=-1)  # (B, T-1)
    out[:, 1:] = pred == labels[:, 1:]
    return out & answer_mask(labels)


def probability_from_nll(nll: torch.Tensor) -> torch.Tensor:
    """exp(-mean answer NLL), elementwise: (N,) -> (N,)."""
    return torch.exp(-nll)


@torch.no_grad()
def answer_probability(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-instance length-normalised answer probability exp(-mean answer NLL), shape (N,).

    The answer includes its EOS token, as in TOFU (the loss is the training loss).
    """
    logits = forward_logits(model, batch)
    return probability_from_nll(answer_nll(logits, batch["labels"].to(logits.device)))


def probability_with_options(true_nll: torch.Tensor, perturbed_nll: torch.Tensor) -> torch.Tensor:
    """TOFU's option-normalised probability P(true) / (P(true) + sum_j P(perturbed_j)).

    ``true_nll`` (N,) and ``perturbed_nll`` (N, K) are mean answer NLLs, so every P is the
    length-normalised probability exp(-mean NLL). Computed as a softmax over the K+1 options.
    """
    if perturbed_nll.dim() != 2 or perturbed_nll.shape[0] != true_nll.shape[0]:
        raise ValueError(
            f"perturbed_nll must be (N, K) with N={true_nll.shape[0]}, got {tuple(perturbed_nll.shape)}"
        )
    dtype = compute_dtype(true_nll.dtype)
    all_nll = torch.cat([true_nll.to(dtype).unsqueeze(1), perturbed_nll.to(dtype)], dim=1)  # (N, K+1)
    return torch.softmax(-all_nll, dim=1)[:, 0]


def exact_memorization_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, eos_token_id: int | None = None
) -> torch.Tensor:
    """Fraction of answer tokens (trailing EOS excluded) whose teacher-forced argmax is right, (N,)."""
    mask = content_mask(labels, eos_token_id)  # (B, T)
    hits = argmax_matches(logits, labels) & mask  # (B, T)
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        bad = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"instances {bad} have no answer tokens besides EOS; exact memorisation is undefined")
    return hits.sum(dim=1).to(torch.float32) / counts.to(torch.float32)


@torch.no_grad()
def on_model(from_logits, model: torch.nn.Module, batch: dict[str, torch.Tensor], eos_token_id: int | None = None):
    """A ``*_from_logits(logits, labels, eos_token_id)`` metric on ``model``'s forward of ``batch``
    (EOS id defaults to the model config's)."""
    logits = forward_logits(model, batch)
    labels = batch["labels"].to(logits.device)
    return from_logits(logits, labels, resolve_eos_token_id(model, eos_token_id))


def exact_memorization(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, eos_token_id: int | None = None
) -> torch.Tensor:
    """Per-instance exact memorisation (EM), shape (N,); EOS id defaults to the model config's."""
    return on_model(exact_memorization_from_logits, model, batch, eos_token_id)
