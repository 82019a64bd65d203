"""Torch datasets and collators for QA pairs and forget/retain pairing.

:class:`QADataset` tokenises every row once (see :func:`tokenize_example`); an item is a dict
of 1-D LongTensors plus ``index`` (the row number). :class:`QACollator` right-pads a list of
items into (B, T) tensors. :class:`ForgetRetainDataset` pairs forget item i with a retain item
drawn by a per-process RNG seeded with ``seed + rank`` (so ranks of a distributed run see
different retain items; open-unlearning issue #139), and optionally with the forget question
answered by a refusal (``idk``) for IdkPO-style objectives.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from geffect.losses import IGNORE_INDEX

from .errors import DataError
from .templates import PromptTemplate, get_template
from .tokenization import tokenize_example

logger = logging.getLogger(__name__)

Item = dict  # {"input_ids": (T,), "attention_mask": (T,), "labels": (T,), "index": int}


def _as_rows(rows) -> list[dict]:
    if hasattr(rows, "to_list"):
        return rows.to_list()
    return list(rows)


class QADataset(Dataset):
    """Tokenised QA pairs (``rows``: a :class:`datasets.Dataset` or a list of dicts)."""

    def __init__(
        self,
        rows,
        tokenizer,
        *,
        template: PromptTemplate | None = None,
        max_length: int = 512,
        question_key: str = "question",
        answer_key: str = "answer",
    ) -> None:
        rows = _as_rows(rows)
        if not rows:
            raise DataError("QADataset got no rows; pass a non-empty split (check load_split's result)")
        missing = [k for k in (question_key, answer_key) if k not in rows[0]]
        if missing:
            raise DataError(
                f"QADataset rows lack {missing}; they have {sorted(rows[0])}. "
                "Pass question_key= / answer_key=, or load_split(..., columns=...)"
            )
        self.tokenizer = tokenizer
        self.template = template or get_template(tokenizer)
        self.max_length = max_length
        self.questions = [str(r[question_key]) for r in rows]
        self.answers = [str(r[answer_key]) for r in rows]
        #: rows cut to ``max_length`` (``rows``), among them ``prompt_cut`` (prompt shortened from the left) and
        #: ``answer_cut`` (answer longer than max_length - 1, cut on the right)
        self.truncated: dict[str, int] = {"rows": 0, "prompt_cut": 0, "answer_cut": 0}
        self._items = [self.encode(q, a, stats=self.truncated) for q, a in zip(self.questions, self.answers)]
        if any(self.truncated.values()):
            logger.warning("%d of %d rows longer than max_length=%d: %d prompts cut from the left, %d answers cut "
                           "on the right (raise max_length to keep them whole)", self.n_truncated, len(rows),
                           max_length, self.truncated["prompt_cut"], self.truncated["answer_cut"])

    @property
    def n_truncated(self) -> int:
        """Rows that did not fit ``max_length`` whole (see :func:`tokenize_example`)."""
        return self.truncated["rows"]

    def encode(self, question: str, answer: str, stats: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
        """Tokenise one pair with this dataset's tokenizer, template and max_length."""
        enc = tokenize_example(self.tokenizer, question, answer, template=self.template, max_length=self.max_length,
                               stats=stats)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in enc.items()}  # each (T,)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> Item:
        return {**self._items[i], "index": int(i)}


def _pad(seqs: Sequence[torch.Tensor], value: int) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True, padding_value=value)  # (B, T)


class QACollator:
    """Right-pads items to the longest: pad id in ``input_ids``, 0 in ``attention_mask``,
    -100 in ``labels``; ``index`` becomes a (B,) LongTensor."""

    def __init__(self, pad_token_id: int) -> None:
        if pad_token_id is None:
            raise DataError("pad_token_id is None; set tokenizer.pad_token (e.g. to the EOS token) first")
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: Sequence[Item]) -> dict[str, torch.Tensor]:
        if not items:
            raise DataError("QACollator got an empty list of items")
        return {
            "input_ids": _pad([it["input_ids"] for it in items], self.pad_token_id),  # (B, T)
            "attention_mask": _pad([it["attention_mask"] for it in items], 0),  # (B, T)
            "labels": _pad([it["labels"] for it in items], IGNORE_INDEX),  # (B, T)
            "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),  # (B,)
        }


def process_rank() -> int:
    """torch.distributed rank if initialised, else env ``RANK``, else 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


class ForgetRetainDataset(Dataset):
    """Forget item i paired with a random retain item (and a refusal answer if ``idk_answers``).

    The RNG is ``numpy.random.default_rng(seed + rank)`` in the main process; a DataLoader
    worker w uses ``default_rng([seed + rank, w])`` so workers do not repeat each other.
    Draws follow the order of ``__getitem__`` calls: the same seed, rank and access order give
    the same pairs.
    """

    def __init__(
        self,
        forget: QADataset,
        retain: QADataset | None = None,
        *,
        seed: int = 0,
        idk_answers: Sequence[str] | None = None,
        rank: int | None = None,
    ) -> None:
        if len(forget) == 0:
            raise DataError("the forget dataset is empty; pass a non-empty forget split")
        if retain is not None and len(retain) == 0:
            raise DataError("the retain dataset is empty; pass retain=None or a non-empty retain split")
        if idk_answers is not None and len(idk_answers) == 0:
            raise DataError("idk_answers is empty; pass load_idk_answers(source) or None")
        self.forget, self.retain = forget, retain
        self.idk_answers = list(idk_answers) if idk_answers is not None else None
        self.seed = int(seed)
        self.rank = process_rank() if rank is None else int(rank)
        self._rngs: dict[int, np.random.Generator] = {}

    def _rng(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else info.id
        if worker not in self._rngs:
            base = self.seed + self.rank
            self._rngs[worker] = np.random.default_rng(base if worker < 0 else [base, worker])
        return self._rngs[worker]

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict[str, Item]:
        out = {"forget": self.forget[i]}
        rng = self._rng()
        if self.retain is not None:
            out["retain"] = self.retain[int(rng.integers(len(self.retain)))]
        if self.idk_answers is not None:
            refusal = self.idk_answers[int(rng.integers(len(self.idk_answers)))]
            out["idk"] = {**self.forget.encode(self.forget.questions[i], refusal), "index": int(i)}
        return out


class ForgetRetainCollator:
    """Collates ForgetRetainDataset items into ``{"forget": batch, "retain": batch, "idk": batch}``
    (only the keys present in the items)."""

    def __init__(self, pad_token_id: int) -> None:
        self.collate = QACollator(pad_token_id)

    def __call__(self, items: Sequence[dict[str, Item]]) -> dict[str, dict[str, torch.Tensor]]:
        if not items:
            raise DataError("ForgetRetainCollator got an empty list of items")
        return {key: self.collate([it[key] for it in items]) for key in items[0]}
