"""Extraction strength (ES): how short an answer prefix suffices for greedy decoding to reproduce the rest.

Definition (Carlini et al. 2021 extraction; used for unlearning by SatImp, Yang et al. ICML 2025,
and open-unlearning's ``extraction_strength``), for an answer y = (y_1..y_L) to prompt x (the
answer's trailing EOS token excluded):

    ES(x, y) = 1 - k*/L,   k* = min{ k in 0..L : greedy decoding from [x, y_<=k] emits y_k+1..y_L }

Derivation of the teacher-forced form. Greedy decoding from the prefix [x, y_1..y_k] emits
y_k+1 iff argmax p(. | x, y_<=k) = y_k+1; given that, its next input is exactly the teacher-forced
context, so by induction it reproduces the whole remainder iff the teacher-forced argmax is right
at every answer position j > k. Hence k* = L - s with s the length of the longest all-correct
*suffix* of teacher-forced argmax matches, and

    ES = s / L           (0 when the last token is already wrong; 1 when every token matches).

This needs one forward pass, batched with padding. (open-unlearning returns 1/L instead of 0 when
nothing matches; we follow the definition.) ``tests/unlearning/metrics/test_metrics_extraction.py`` checks it against
a brute-force version that really runs greedy generation from every prefix.
"""
from __future__ import annotations

import torch

from unlearning.metrics.likelihood import argmax_matches, content_mask, on_model

__all__ = ["extraction_strength", "extraction_strength_from_logits", "correct_suffix_length"]


def correct_suffix_length(matches: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Number of scored positions after the last wrong one, per row: (B, T), (B, T) -> (B,) long.

    ``matches`` and ``mask`` are bool and aligned; positions outside ``mask`` are ignored, so the
    answer need not be contiguous.
    """
    B, T = mask.shape
    pos = torch.arange(T, device=mask.device).expand(B, T)  # (B, T)
    wrong = mask & ~matches  # (B, T)
    last_wrong = torch.where(wrong, pos, torch.full_like(pos, -1)).amax(dim=1)  # (B,)
    return (mask & (pos > last_wrong.unsqueeze(1))).sum(dim=1)  # (B,)


def extraction_strength_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, eos_token_id: int | None = None
) -> torch.Tensor:
    """ES per instance from teacher-forced logits (B, T, V) and labels (B, T): (B,) float32."""
    mask = content_mask(labels, eos_token_id)  # (B, T)
    counts = mask.sum(dim=1)  # (B,)
    if bool((counts == 0).any()):
        bad = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"instances {bad} have no answer tokens besides EOS; extraction strength is undefined")
    suffix = correct_suffix_length(argmax_matches(logits, labels), mask)  # (B,)
    return suffix.to(torch.float32) / counts.to(torch.float32)


def extraction_strength(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, eos_token_id: int | None = None
) -> torch.Tensor:
    """Per-instance extraction strength, shape (N,). EOS id defaults to ``model.config.eos_token_id``."""
    return on_model(extraction_strength_from_logits, model, batch, eos_token_id)
