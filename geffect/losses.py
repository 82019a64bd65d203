"""Token-level conventions shared by the whole toolkit.

A batch holds ``input_ids``, ``attention_mask`` and ``labels`` (B, T); ``labels`` is
:data:`IGNORE_INDEX` (-100, the ignore index of Hugging Face causal LMs) on prompt and padding
tokens and the model shifts internally, so the logit at position t-1 predicts ``labels[:, t]``.

Every token-level quantity in this project is **aligned with ``labels``**: a (B, T) tensor
whose column t belongs to the token ``labels[:, t]``; column 0 and every position whose label
is -100 hold 0. The *answer tokens* are the positions where :func:`answer_mask` is True.

All log-probabilities are computed in float32 (float64 if the logits are float64), even for
bf16 models.
"""
from __future__ import annotations

import torch

__all__ = ["IGNORE_INDEX", "answer_logprob", "answer_mask", "answer_nll", "compute_dtype", "token_logprobs"]

IGNORE_INDEX = -100


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other dtype is promoted to float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def answer_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: True where ``labels[:, t]`` is a scored answer token (t >= 1, label != -100)."""
    mask = labels != IGNORE_INDEX
    mask[:, 0] = False  # nothing predicts the first token
    return mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[:, t] | x_<t), aligned with ``labels``: (B, T), 0 off answer tokens.

    ``logits`` is (B, T, V) as returned by a causal LM (not shifted).
    """
    B, T, V = logits.shape
    mask = answer_mask(labels)  # (B, T)
    out = torch.zeros(B, T, dtype=compute_dtype(logits.dtype), device=logits.device)
    if T < 2:
        return out
    logp = torch.log_softmax(logits[:, :-1].to(out.dtype), dim=-1)  # (B, T-1, V)
    tgt = labels[:, 1:].clamp_min(0)  # (B, T-1)
    picked = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    out[:, 1:] = picked
    return out * mask


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-instance risk R(x): mean NLL over the instance's answer tokens, shape (B,).

    Raises ``ValueError`` if an instance has no answer token (all labels -100): its risk is
    undefined and silently returning 0 or NaN would corrupt every mean built on it.
    """
    mask = answer_mask(labels)
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        bad = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(
            f"instances {bad} have no answer tokens (all labels are -100 after the shift); "
            "check the prompt template / max_length truncation so every answer keeps at least one token"
        )
    lp = token_logprobs(logits, labels)
    return -lp.sum(dim=1) / counts.to(lp.dtype)


def answer_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-instance summed answer log-likelihood log p(y | x), shape (B,)."""
    return token_logprobs(logits, labels).sum(dim=1)
