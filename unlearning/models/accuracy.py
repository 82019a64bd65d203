"""Teacher-forced answer-token accuracy, and the memorisation scores of a model on a set of rows.

For every answer token (label != ``IGNORE_INDEX``, see :mod:`geffect.losses`) the model's
argmax prediction given the true prefix is compared with the label. The score of one instance
is the fraction it gets right (the answer's EOS token included, since the model must learn to
stop); :func:`answer_token_accuracy` returns the mean over instances (each instance counts
once, like the risk R(D)). ``unlearning.metrics.exact_memorization`` is the same without the
EOS token.

:func:`memorisation_scores` adds, in the same forward pass, the two numbers an unlearning
study checks first: extraction strength (``unlearning.metrics.extraction``, greedy, EOS
excluded, exactly as the evaluation computes it) and the answer probability
exp(-mean answer NLL) (TOFU's probability, EOS included).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from geffect.losses import answer_mask, answer_nll
from unlearning.data import QACollator
from unlearning.metrics.extraction import extraction_strength_from_logits
from unlearning.metrics.likelihood import argmax_matches, forward_logits, resolve_eos_token_id

__all__ = ["answer_accuracy_from_logits", "answer_token_accuracy", "memorisation_scores", "per_instance_answer_accuracy"]


def answer_accuracy_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) fraction of each instance's answer tokens (EOS included) whose teacher-forced argmax is right."""
    mask = answer_mask(labels)  # (B, T)
    hits = (argmax_matches(logits, labels) & mask).sum(dim=1).float()  # (B,)
    return hits / mask.sum(dim=1).clamp_min(1).float()


@torch.no_grad()
def per_instance_answer_accuracy(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) fraction of each instance's answer tokens whose argmax prediction is right."""
    logits = forward_logits(model, batch)  # (B, T, V)
    return answer_accuracy_from_logits(logits, batch["labels"].to(logits.device))


def _batches(
    model: Any, dataset_or_batches: Any, batch_size: int, pad_token_id: int | None
) -> Iterable[dict[str, torch.Tensor]]:
    if isinstance(dataset_or_batches, torch.utils.data.Dataset) and hasattr(dataset_or_batches, "__len__"):
        pad = pad_token_id if pad_token_id is not None else getattr(model.config, "pad_token_id", None)
        return torch.utils.data.DataLoader(
            dataset_or_batches, batch_size=batch_size, shuffle=False, collate_fn=QACollator(pad or 0)
        )
    return dataset_or_batches


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
    try:
        scores = [per_instance_answer_accuracy(model, b) for b in _batches(model, dataset_or_batches, batch_size, pad_token_id)]
    finally:
        model.train(was_training)
    if not scores:
        raise ValueError("answer_token_accuracy got no data; pass a non-empty dataset or batch list")
    return float(torch.cat(scores).mean())


@torch.no_grad()
def memorisation_scores(
    model: Any,
    dataset_or_batches: torch.utils.data.Dataset | Iterable[dict[str, torch.Tensor]],
    *,
    batch_size: int = 32,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> dict[str, float]:
    """Mean extraction strength, teacher-forced accuracy and answer probability over instances.

    Returns ``{"extraction_strength", "accuracy", "probability", "rows"}``: ES as in
    :func:`unlearning.metrics.extraction_strength` (EOS id from ``model.config`` unless given),
    accuracy as in :func:`answer_token_accuracy`, probability exp(-mean answer NLL) per
    instance (as :func:`unlearning.metrics.answer_probability`), each averaged over instances.
    """
    was_training = model.training
    model.eval()
    eos = resolve_eos_token_id(model, eos_token_id)
    es, acc, prob = [], [], []
    try:
        for batch in _batches(model, dataset_or_batches, batch_size, pad_token_id):
            logits = forward_logits(model, batch)  # (B, T, V)
            labels = batch["labels"].to(logits.device)  # (B, T)
            es.append(extraction_strength_from_logits(logits, labels, eos))
            acc.append(answer_accuracy_from_logits(logits, labels))
            prob.append(torch.exp(-answer_nll(logits, labels)))
    finally:
        model.train(was_training)
    if not es:
        raise ValueError("memorisation_scores got no data; pass a non-empty dataset or batch list")
    return {
        "extraction_strength": float(torch.cat(es).double().mean()),
        "accuracy": float(torch.cat(acc).double().mean()),
        "probability": float(torch.cat(prob).double().mean()),
        "rows": int(sum(len(x) for x in es)),
    }
