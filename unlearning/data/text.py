"""Raw-text corpora for unlearning: documents chunked to the model's length, next-token loss on every token.

MUSE (Shi et al. 2024) and WMDP (Li et al. 2024) unlearn *documents*, not QA pairs. A corpus is
turned into training items the way MUSE's baseline code does it (``swj0419/muse_bench``,
``baselines/dataset.py``):

* ``packing="concat"`` (MUSE): the documents are joined with ``separator`` ("\\n\\n") into one
  string, tokenised once without special tokens, and cut into consecutive pieces of
  ``max_length - 1`` tokens; each piece gets the BOS token in front, so every chunk has at
  most ``max_length`` tokens. A chunk may span two documents.
* ``packing="document"``: every document is tokenised and cut on its own (no chunk crosses a
  document boundary), so a chunk's risk belongs to one document. Useful when an analysis
  wants per-document quantities (G-effects per forget instance).

The last piece of the stream (or of each document) is usually shorter than the others.
``last_chunk`` says what happens to it: ``"keep"`` (default; the collator right-pads it and
its padding labels are ``IGNORE_INDEX``), ``"rotate"`` (MUSE: filled up with the first chunk,
BOS included, and cut to ``max_length`` — so the first tokens are seen twice per epoch), or
``"drop"`` (discarded when there is more than one chunk).

An item is ``{"input_ids", "attention_mask", "labels", "index"}`` with ``labels == input_ids``:
every token is an "answer token" (column 0, the BOS, is never scored because nothing predicts
it; see :func:`geffect.losses.answer_mask`). Batches from :class:`QACollator` /
:class:`ForgetRetainCollator` therefore follow the project's batch convention and every
registered objective runs on them unchanged: token-weighted objectives weight document tokens,
NPO / SimNPO use per-chunk sequence likelihoods, retain terms act on retain chunks.

IdkPO / IdkDPO need a refusal answer to a "question". For text, :attr:`TextChunkDataset.questions`
is the first ``idk_prompt_tokens`` tokens of each chunk (decoded) and :meth:`encode` tokenises
that prefix (masked) followed by the refusal, so ``ForgetRetainDataset(..., idk_answers=...)``
works on text too: the model is taught to answer the start of a forget document with a refusal.
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import Dataset

from .errors import DataError
from .qa import ForgetRetainCollator, ForgetRetainDataset
from .templates import PromptTemplate
from .tokenization import tokenize_example

logger = logging.getLogger(__name__)

__all__ = [
    "PACKINGS",
    "LAST_CHUNK",
    "TextChunkDataset",
    "TextUnlearningData",
    "build_text_unlearning_data",
    "chunk_token_stream",
]

PACKINGS = ("concat", "document")
LAST_CHUNK = ("keep", "rotate", "drop")
#: Prompt/answer layout of IdkPO items on text: the chunk prefix, then " <refusal>".
TEXT_IDK_TEMPLATE = PromptTemplate("text-idk", "{question}", " {answer}")


def chunk_token_stream(
    ids: Sequence[int], max_length: int, *, bos_token_id: int | None, last_chunk: str = "keep"
) -> list[tuple[list[int], int, int]]:
    """Cut one token stream into chunks of at most ``max_length`` tokens (BOS included).

    Returns ``(chunk_ids, start, end)`` triples: ``chunk_ids`` is ``[bos] + ids[start:end]``
    (no BOS when ``bos_token_id`` is None); pieces hold ``max_length - 1`` stream tokens
    (``max_length`` without BOS). ``last_chunk`` handles a short last piece (module docstring).
    """
    if last_chunk not in LAST_CHUNK:
        raise DataError(f"last_chunk must be one of {LAST_CHUNK}, got {last_chunk!r}")
    prefix = [] if bos_token_id is None else [int(bos_token_id)]
    step = max_length - len(prefix)
    if step < 1:
        raise DataError(f"max_length={max_length} leaves no room for text after BOS; use at least 2")
    ids = [int(i) for i in ids]
    out = [(prefix + ids[s : s + step], s, min(s + step, len(ids))) for s in range(0, len(ids), step)]
    if len(out) > 1 and len(out[-1][0]) < max_length:
        if last_chunk == "drop":
            out.pop()
        elif last_chunk == "rotate":  # MUSE: append the first chunk (its BOS too) and cut
            ids_last, s, e = out[-1]
            out[-1] = ((ids_last + out[0][0])[:max_length], s, e)
    elif len(out) == 1 and last_chunk == "rotate" and len(out[0][0]) < max_length:
        logger.debug("a single chunk shorter than max_length cannot be rotated; kept as is")
    return out


def _as_texts(texts) -> list[str]:
    if hasattr(texts, "column_names"):  # datasets.Dataset
        if "text" not in texts.column_names:
            raise DataError(f"the corpus has no 'text' column (columns: {texts.column_names}); pass a list of strings")
        texts = texts["text"]
    texts = [str(t) for t in texts]
    if not texts:
        raise DataError("the corpus is empty; pass at least one document")
    return texts


class TextChunkDataset(Dataset):
    """A corpus of documents as chunks of token ids with ``labels == input_ids``.

    Args:
        texts: the documents (a list of strings, or a ``datasets.Dataset`` with a ``text`` column).
        tokenizer: a Hugging Face tokenizer; its BOS is prepended when ``add_bos`` and it has one.
        max_length: tokens per chunk, BOS included (MUSE: 2048; WMDP/RMU: 512).
        packing: ``"concat"`` (MUSE) or ``"document"`` (module docstring).
        separator: the string joining documents under ``"concat"``.
        last_chunk: ``"keep"``, ``"rotate"`` (MUSE) or ``"drop"``.
        min_chars: documents of at most this many characters are skipped (RMU's ``min_len``).
        idk_prompt_tokens: stream tokens of a chunk used as the "question" of IdkPO items.

    Attributes: ``chunks`` (token-id lists), ``documents`` (for each chunk, the indices of the
    documents it covers), ``texts`` (the kept documents).
    """

    def __init__(
        self,
        texts,
        tokenizer,
        *,
        max_length: int = 2048,
        packing: str = "concat",
        separator: str = "\n\n",
        add_bos: bool = True,
        last_chunk: str = "keep",
        min_chars: int = 0,
        idk_prompt_tokens: int = 16,
    ) -> None:
        if packing not in PACKINGS:
            raise DataError(f"packing must be one of {PACKINGS}, got {packing!r}")
        if not isinstance(max_length, int) or max_length < 2:
            raise DataError(f"max_length must be an int >= 2 (tokens per chunk, BOS included), got {max_length!r}")
        docs = [t for t in _as_texts(texts) if len(t) > min_chars]
        if not docs:
            raise DataError(f"every document has at most min_chars={min_chars} characters; lower min_chars")
        self.tokenizer = tokenizer
        self.texts = docs
        self.max_length = max_length
        self.packing = packing
        self.idk_prompt_tokens = int(idk_prompt_tokens)
        bos = getattr(tokenizer, "bos_token_id", None) if add_bos else None
        self.bos_token_id = bos
        self.chunks: list[list[int]] = []
        self.documents: list[tuple[int, ...]] = []
        if packing == "concat":
            self._chunk_concat(docs, separator, bos, last_chunk)
        else:
            for d, text in enumerate(docs):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                if not ids:
                    continue
                for chunk, _, _ in chunk_token_stream(ids, max_length, bos_token_id=bos, last_chunk=last_chunk):
                    self.chunks.append(chunk)
                    self.documents.append((d,))
        if not self.chunks or all(len(c) < 2 for c in self.chunks):
            raise DataError("the corpus produced no chunk with a token to predict; check the texts and max_length")
        self._stream_lengths = [len(c) - (0 if bos is None else 1) for c in self.chunks]
        logger.debug("%d documents -> %d chunks of <= %d tokens (%s)", len(docs), len(self.chunks), max_length, packing)

    def _chunk_concat(self, docs: list[str], separator: str, bos, last_chunk: str) -> None:
        joined = separator.join(docs)
        # document index of every character of the joined text (separators -> the next document)
        starts, pos = [], 0
        for text in docs:
            starts.append(pos)
            pos += len(text) + len(separator)
        try:
            enc = self.tokenizer(joined, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, TypeError, ValueError, KeyError):  # slow tokenizers have no offsets
            enc, offsets = self.tokenizer(joined, add_special_tokens=False), None
        ids = enc["input_ids"]
        for chunk, s, e in chunk_token_stream(ids, self.max_length, bos_token_id=bos, last_chunk=last_chunk):
            self.chunks.append(chunk)
            if offsets is None:
                self.documents.append(())
                continue
            first = bisect.bisect_right(starts, offsets[s][0]) - 1
            last = bisect.bisect_right(starts, max(offsets[e - 1][1] - 1, offsets[s][0])) - 1
            self.documents.append(tuple(range(max(first, 0), max(last, 0) + 1)))

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> dict:
        ids = torch.tensor(self.chunks[i], dtype=torch.long)  # (T,)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone(), "index": int(i)}

    @property
    def num_tokens(self) -> int:
        """Tokens that carry a loss (every chunk token but the first)."""
        return sum(len(c) - 1 for c in self.chunks)

    # ---- IdkPO on text (duck-typed like QADataset for ForgetRetainDataset) -------------------
    @property
    def questions(self) -> list[str]:
        """The decoded first ``idk_prompt_tokens`` stream tokens of every chunk."""
        skip = 0 if self.bos_token_id is None else 1
        return [
            self.tokenizer.decode(c[skip : skip + self.idk_prompt_tokens], skip_special_tokens=True) for c in self.chunks
        ]

    def encode(self, question: str, answer: str) -> dict[str, torch.Tensor]:
        """``question`` (masked) followed by `` answer`` and EOS; (T,) LongTensors."""
        enc = tokenize_example(self.tokenizer, question, answer, template=TEXT_IDK_TEMPLATE, max_length=self.max_length)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in enc.items()}


@dataclass
class TextUnlearningData:
    """What an unlearning run on raw text needs: the paired training set and its parts.

    ``train[i]`` is ``{"forget": chunk i, "retain": a random retain chunk[, "idk": ...]}``;
    ``collator`` turns a list of them into ``{"forget": batch, "retain": batch[, "idk": batch]}``.
    """

    train: ForgetRetainDataset
    forget: TextChunkDataset
    retain: TextChunkDataset | None
    collator: ForgetRetainCollator

    def describe(self) -> dict:
        """A JSON-able description (chunks, tokens, documents, chunking) for run records."""
        out = {"kind": "text"}
        for name, ds in (("forget", self.forget), ("retain", self.retain)):
            if ds is not None:
                out[name] = {"documents": len(ds.texts), "chunks": len(ds), "tokens": ds.num_tokens,
                             "max_length": ds.max_length, "packing": ds.packing}
        out["idk"] = self.train.idk_answers is not None
        return out


def build_text_unlearning_data(
    forget_texts,
    retain_texts,
    tokenizer,
    *,
    max_length: int = 2048,
    retain_max_length: int | None = None,
    packing: str = "concat",
    last_chunk: str = "keep",
    min_chars: int = 0,
    seed: int = 0,
    idk_answers: Sequence[str] | None = None,
    rank: int | None = None,
) -> TextUnlearningData:
    """Chunk a forget and a retain corpus and pair them for the unlearning trainer.

    ``retain_texts=None`` gives forget-only items. The retain chunk of each item is drawn by
    :class:`ForgetRetainDataset`'s per-process RNG (``seed`` + rank); MUSE's own code pairs
    forget chunk i with retain chunk i mod n_retain instead (docs/muse_wmdp.md).
    """
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise DataError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to the EOS token) first")
    kw = dict(packing=packing, last_chunk=last_chunk, min_chars=min_chars)
    forget = TextChunkDataset(forget_texts, tokenizer, max_length=max_length, **kw)
    retain = None
    if retain_texts is not None:
        retain = TextChunkDataset(retain_texts, tokenizer, max_length=retain_max_length or max_length, **kw)
    train = ForgetRetainDataset(forget, retain, seed=seed, idk_answers=idk_answers, rank=rank)
    return TextUnlearningData(train=train, forget=forget, retain=retain, collator=ForgetRetainCollator(tokenizer.pad_token_id))
