"""Teacher-forced answer-token accuracy: how well a model has memorised its answers.

For every answer token (label != -100, see :mod:`geffect.losses`) the model's argmax
prediction given the true prefix is compared with the label. The score of one instance is
the fraction it gets right; :func:`answer_token_accuracy` returns the mean over instances
(each instance counts once, like the risk R(D) of a G-effect probe set). This is TOFU's "exact
memorisation"; ``unlearning.metrics`` has the per-instance metric used in evaluations.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from geffect.engine import model_logits
from geffect.losses import answer_mask
from unlearning.data import QACollator


@torch.no_grad()
def per_instance_answer_accuracy(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) fraction of each instance's answer tokens whose argmax prediction is right."""
    device = next(model.parameters()).device
    input_ids = batch["input_ids"].to(device)
    labels = batch["labels"].to(device)
    logits = model_logits(model, input_ids, batch["attention_mask"].to(device))  # (B, T, V)
    mask = answer_mask(labels)  # (B, T)
    pred = torch.zeros_like(labels)
    pred[:, 1:] = logits[:, :-1].argmax(dim=-1)  # (B, T) aligned with labels
    hits = ((pred == labels) & mask).sum(dim=1).float()  # (B,)
    return hits / mask.sum(dim=1).clamp_min(1).float()


@torch.no_grad()
def answer_token_accuracy(
    model: Any,
    dataset_or_batches: torch.utils.data.Dataset | Iterable[dict[str, torch.Tensor]],
    *,
    batch_size: int = 32,
    pad_token_id: int | None = None,
) -> float:
    """Mean over instances of the teacher-forced answer-token accuracy.

    Args:
        model: a causal LM returning ``.logits`` (B, T, V).
        dataset_or_batches: a map-style dataset of tokenised items (e.g. ``QADataset``; padded
            with ``QACollator``) or an iterable of ready batches (dicts of (B, T) tensors).
        batch_size: batch size when a dataset is given.
        pad_token_id: padding id for a dataset (default ``model.config.pad_token_id`` or 0).
    """
    was_training = model.training
    model.eval()
    if isinstance(dataset_or_batches, torch.utils.data.Dataset) and hasattr(dataset_or_batches, "__len__"):
        pad = pad_token_id if pad_token_id is not None else getattr(model.config, "pad_token_id", None)
        batches: Iterable[dict[str, torch.Tensor]] = torch.utils.data.DataLoader(
            dataset_or_batches, batch_size=batch_size, shuffle=False, collate_fn=QACollator(pad or 0)
        )
    else:
        batches = dataset_or_batches
    scores = [per_instance_answer_accuracy(model, b) for b in batches]
    if was_training:
        model.train()
    if not scores:
        raise ValueError("answer_token_accuracy got no data; pass a non-empty dataset or batch list")
    return float(torch.cat(scores).mean())
