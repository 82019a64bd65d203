"""Model calls shared by every objective: logits, token log-probs, hidden states, answer counts.

Models are called with ``input_ids`` and ``attention_mask`` only (batches may carry ``index``
and other keys), through :func:`geffect.engine.model_logits` when only logits are needed. A
reference model always runs under ``torch.no_grad``. Token log-probs are aligned with
``labels`` and computed in float32 (:func:`geffect.losses.token_logprobs`).
"""
from __future__ import annotations

import contextlib

import torch

from geffect.engine import model_logits
from geffect.losses import answer_mask, token_logprobs

__all__ = ["batch_logits", "batch_logprobs", "count_answer_tokens", "hidden_states_output", "reference_logits",
           "reference_logprobs"]


def batch_logits(model, batch: dict) -> torch.Tensor:
    """Logits (B, T, V) of ``model`` on ``batch``, with graph."""
    return model_logits(model, batch["input_ids"], batch["attention_mask"])


def reference_logits(ref_model, batch: dict) -> torch.Tensor:
    """Logits (B, T, V) of the reference model, without graph."""
    with torch.no_grad():
        return batch_logits(ref_model, batch)


def batch_logprobs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(token log-probs (B, T) with graph, answer mask (B, T) bool)."""
    return token_logprobs(batch_logits(model, batch), batch["labels"]), answer_mask(batch["labels"])


def reference_logprobs(ref_model, batch: dict) -> torch.Tensor:
    """Token log-probs (B, T) of the reference model, without graph."""
    with torch.no_grad():
        return token_logprobs(batch_logits(ref_model, batch), batch["labels"])


def hidden_states_output(model, batch: dict, *, reference: bool = False):
    """The model output with ``hidden_states`` (and ``logits``); under ``no_grad`` when ``reference``."""
    with torch.no_grad() if reference else contextlib.nullcontext():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)


def count_answer_tokens(mask: torch.Tensor, what: str) -> torch.Tensor:
    """The number of answer tokens in ``mask`` (a 0-d tensor); a clear error when there are none."""
    n = mask.sum()
    if int(n) == 0:
        raise ValueError(
            f"the {what} micro-batch has no answer tokens (all labels are the ignore index -100); "
            "check the prompt template and max_length so answers survive tokenisation"
        )
    return n
