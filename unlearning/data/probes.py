"""Probe sets for G-effect tracking, built from data.

A probe set is one padded batch (``input_ids``, ``attention_mask``, ``labels`` with
``IGNORE_INDEX`` on prompt and padding tokens, ``index``: the row numbers), fixed for a whole
run so that tracked steps are comparable (:class:`unlearning.callbacks.GEffectCallback`,
:class:`geffect.GEffectTracker`)::

    from datasets import load_dataset
    from unlearning.data import probe_batches

    tofu = "locuslab/TOFU"
    probes = probe_batches({"forget": load_dataset(tofu, "forget10")["train"],
                            "retain": load_dataset(tofu, "retain90")["train"]},
                           tokenizer, model=model, size=16)

Rows may be question/answer pairs (tokenised with the model's prompt template,
:func:`unlearning.data.get_template`, prompt tokens masked, EOS appended, exactly as the
training data: :class:`unlearning.data.QADataset`), already tokenised rows with ``input_ids``
and ``labels`` (and optionally ``attention_mask``, ``index``), e.g. the output of someone
else's preprocessing, or a map-style dataset of tokenised items (the training data itself: a
``QADataset`` or a ``TextChunkDataset``, whose first rows are then the probes).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from torch.utils.data import Dataset

from geffect.batches import pad_rows
from unlearning.data.errors import DataError
from unlearning.data.qa import QACollator, QADataset
from unlearning.data.templates import get_template

__all__ = ["probe_batches", "tokenised_batch"]

PROBE_KEYS = ("input_ids", "attention_mask", "labels", "index")


def _first_row(rows) -> Mapping[str, Any]:
    if isinstance(rows, Dataset):  # a map-style dataset of tokenised items (QADataset, TextChunkDataset, ...)
        return rows[0]
    if hasattr(rows, "column_names"):  # datasets.Dataset
        return {c: None for c in rows.column_names}
    rows = list(rows)
    if not rows:
        raise DataError("a probe set has no rows")
    return rows[0]


def _take(rows, size: int | None):
    n = len(rows)
    k = n if size is None else min(size, n)
    if hasattr(rows, "select"):  # datasets.Dataset
        return rows.select(range(k))
    return [rows[i] for i in range(k)]


def tokenised_batch(rows: Sequence[Mapping[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad tokenised rows (``input_ids``, ``labels``, optional ``attention_mask`` / ``index``)
    (:func:`geffect.batches.pad_rows`). ``labels`` must mark the answer tokens (``IGNORE_INDEX``
    elsewhere): the G-effect risk is the NLL of exactly those tokens."""
    try:
        return pad_rows(rows, pad_token_id)
    except ValueError as err:
        raise DataError(f"tokenised probe rows: {err}") from err


def probe_batches(
    sets: Mapping[str, Any],
    tokenizer=None,
    *,
    size: int | None = None,
    model=None,
    template=None,
    max_length: int = 512,
    question_key: str = "question",
    answer_key: str = "answer",
    pad_token_id: int | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """``{name: rows}`` -> ``{name: probe batch}``: the first ``size`` rows of every set (all if None).

    ``rows``: a :class:`datasets.Dataset`, a list of dicts, or a map-style dataset whose items
    hold ``input_ids``, ``attention_mask``, ``labels`` and ``index``
    (:class:`unlearning.data.QADataset`, :class:`unlearning.data.TextChunkDataset`); a set
    given as ``None`` is left out (e.g. no retain set). Question/answer rows need the
    ``tokenizer``; their template is ``template``, else the one
    :func:`unlearning.data.get_template` picks for ``model`` (or the tokenizer). Tokenised rows
    are padded with ``pad_token_id`` (default: the tokenizer's, else the dataset tokenizer's, else 0).
    """
    if not sets:
        raise ValueError("give at least one probe set, e.g. {'forget': forget_rows, 'retain': retain_rows}")
    if pad_token_id is None and tokenizer is not None:
        pad_token_id = tokenizer.pad_token_id
    out = {}
    for name, rows in sets.items():
        if rows is None:
            continue
        first = _first_row(rows)
        if isinstance(rows, Dataset):
            ds = rows
        elif "input_ids" in first:
            out[name] = tokenised_batch(list(_take(rows, size)), 0 if pad_token_id is None else pad_token_id)
            continue
        elif question_key in first and answer_key in first:
            if tokenizer is None:
                raise ValueError(f"probe set {name!r} has question/answer rows: pass the tokenizer to tokenise them")
            chosen = template if template is not None else get_template(model if model is not None else tokenizer)
            ds = QADataset(_take(rows, size), tokenizer, template=chosen, max_length=max_length,
                           question_key=question_key, answer_key=answer_key)
        else:
            raise DataError(f"probe set {name!r}: rows have neither {question_key!r}/{answer_key!r} nor input_ids/labels "
                            f"(columns {sorted(first)}); pass question_key= / answer_key=")
        pad = getattr(getattr(ds, "tokenizer", None), "pad_token_id", 0) if pad_token_id is None else pad_token_id
        n = len(ds) if size is None else min(size, len(ds))
        batch = QACollator(pad)([ds[i] for i in range(n)])
        out[name] = {k: batch[k] for k in PROBE_KEYS}
    return out



def build_probes(forget_dataset, retain_dataset, size: int, pad_token_id: int) -> dict[str, dict[str, torch.Tensor]]:
    """Deprecated: ``probe_batches({"forget": forget_dataset, "retain": retain_dataset}, size=size,
    pad_token_id=pad_token_id)`` (the one probe builder); kept for one release."""
    warnings.warn("build_probes is deprecated; use unlearning.data.probe_batches({'forget': ..., 'retain': ...}, "
                  "size=..., pad_token_id=...)", DeprecationWarning, stacklevel=2)
    return probe_batches({"forget": forget_dataset, "retain": retain_dataset}, size=size, pad_token_id=pad_token_id)
