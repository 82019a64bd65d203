"""MUSE metrics (Shi et al. 2024, ``swj0419/muse_bench``): VerbMem, KnowMem, PrivLeak.

* **VerbMem** (no verbatim memorisation): greedy continuation of each ``verbmem`` prompt (up to
  128 new tokens) against the reference continuation ``gt`` cut to its first 128 tokens (MUSE
  tokenises ``gt`` *with* the BOS token before cutting, so 127 text tokens remain for a Llama
  tokenizer; we do the same). Score: ROUGE-L **F1** (``rouge_score``, no stemming), mean over
  prompts. MUSE's tables multiply by 100; we report fractions.
* **KnowMem** (no knowledge memorisation; on the retain QA it is the *utility*): the prompt is
  the in-context examples, each ``"Question: {q}\\nAnswer: {a}\\n\\n"``, then
  ``"Question: {q}\\nAnswer: "`` (trailing space, as MUSE); greedy decoding of up to 32 new
  tokens, cut before the first ``"\\n\\n"``, ``"\\nQuestion"`` or ``"Question:"``; ROUGE-L F1
  against the answer, mean over questions.
* **PrivLeak**: Min-K% (k = 0.4) membership scores of the ``privleak`` forget and holdout
  texts (whole text scored, BOS prepended, truncated to ``max_length``); the AUC is turned into
  PrivLeak relative to a retain model, see :func:`unlearning.metrics.mia.privleak` and
  docs/muse_wmdp.md for the orientation of the AUC.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from geffect.losses import IGNORE_INDEX
from unlearning.metrics.generation import _left_pad
from unlearning.metrics.likelihood import forward_logits
from unlearning.metrics.mia import mia_scores_from_logits

logger = logging.getLogger(__name__)

__all__ = [
    "KNOWMEM_STOP_STRINGS",
    "cut_at_stop_strings",
    "greedy_continuations",
    "knowmem_prompt",
    "knowmem_table",
    "model_max_length",
    "rouge_scores",
    "text_mia_scores",
    "verbmem_table",
]

KNOWMEM_STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")


def model_max_length(model, default: int = 2048) -> int:
    """The model's context length (``max_position_embeddings`` / ``n_positions``), else ``default``."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def cut_at_stop_strings(text: str, stop_strings: Sequence[str]) -> str:
    """The part of ``text`` before the earliest occurrence of any stop string (MUSE's cut)."""
    for s in stop_strings:
        text = text.split(s)[0]
    return text


class _StopOnStrings(StoppingCriteria):
    """Per-row stop once the decoded new tokens contain a stop string (rows finish independently)."""

    def __init__(self, tokenizer, prompt_len: int, stop_strings: Sequence[str]) -> None:
        self.tokenizer, self.prompt_len, self.stop_strings = tokenizer, prompt_len, tuple(stop_strings)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stop_strings) for t in texts], device=input_ids.device)


@torch.no_grad()
def greedy_continuations(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    stop_strings: Sequence[str] = (),
    limits: Sequence[int] | None = None,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts``, decoded as MUSE does (special tokens skipped), not stripped.

    ``limits`` (one int per prompt, each <= ``max_new_tokens``) keeps only the first
    ``limits[i]`` generated tokens of prompt i — the same tokens a greedy run with
    ``max_new_tokens=limits[i]`` produces.

    String prompts are tokenised with the tokenizer's special tokens (BOS), as MUSE does.
    Generation stops at EOS; the text is cut before the first of ``stop_strings`` (a row stops
    generating as soon as it contains one, which does not change the cut text). Batches are
    left-padded; the result equals one-at-a-time decoding (tested).
    """
    if len(prompts) == 0:
        return []
    seqs = [
        list(tokenizer(p, add_special_tokens=True)["input_ids"]) if isinstance(p, str) else [int(i) for i in p]
        for p in prompts
    ]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first")
    if limits is not None and (len(limits) != len(seqs) or any(not 0 <= int(n) <= max_new_tokens for n in limits)):
        raise ValueError(f"limits must hold one int in [0, max_new_tokens={max_new_tokens}] per prompt")
    device = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out: list[str | None] = [None] * len(seqs)
    was_training = model.training
    model.eval()
    try:
        for s in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress, leave=False):
            idx = order[s : s + batch_size]
            ids, mask = _left_pad([seqs[i] for i in idx], pad_id)  # (B, T)
            kwargs = {}
            if stop_strings:
                kwargs["stopping_criteria"] = StoppingCriteriaList([_StopOnStrings(tokenizer, ids.shape[1], stop_strings)])
            gen = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id, **kwargs,
            )
            for row, i in zip(gen[:, ids.shape[1] :].cpu().tolist(), idx):
                if limits is not None:
                    row = row[: int(limits[i])]
                if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in row:
                    row = row[: row.index(tokenizer.eos_token_id)]
                text = tokenizer.decode(row, skip_special_tokens=True)
                out[i] = cut_at_stop_strings(text, stop_strings)
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


_SCORERS: dict[bool, object] = {}


def rouge_scores(predictions: Sequence[str], references: Sequence[str], *, stemmer: bool = False) -> pd.DataFrame:
    """ROUGE-L and ROUGE-1 F1 / recall of each prediction against its reference (``rouge_score``).

    MUSE scores without stemming (``use_stemmer=False``); open-unlearning with stemming.
    Columns: rougeL_f1, rougeL_recall, rouge1_f1, rouge1_recall.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if stemmer not in _SCORERS:
        from rouge_score import rouge_scorer

        _SCORERS[stemmer] = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=stemmer)
    rows = []
    for pred, ref in zip(predictions, references):
        sc = _SCORERS[stemmer].score(ref, pred)
        rows.append({"rougeL_f1": sc["rougeL"].fmeasure, "rougeL_recall": sc["rougeL"].recall,
                     "rouge1_f1": sc["rouge1"].fmeasure, "rouge1_recall": sc["rouge1"].recall})
    return pd.DataFrame(rows, columns=["rougeL_f1", "rougeL_recall", "rouge1_f1", "rouge1_recall"])


def _truncate_reference(tokenizer, gt: str, max_tokens: int) -> tuple[str, int]:
    """(gt cut to its first ``max_tokens`` tokens, BOS included as MUSE does; the number of text tokens kept)."""
    ids = tokenizer(gt, add_special_tokens=True)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    kept = ids[:max_tokens]
    text_tokens = max_tokens if len(ids) >= max_tokens else sum(1 for i in kept if i not in special)
    return tokenizer.decode(kept, skip_special_tokens=True), text_tokens


def verbmem_table(
    model, tokenizer, prompts: Sequence[str], gts: Sequence[str], *, max_new_tokens: int = 128,
    match_reference_length: bool = True, batch_size: int = 16, stemmer: bool = False, progress: bool = False,
) -> pd.DataFrame:
    """One row per VerbMem prompt: prompt, gt (cut to ``max_new_tokens`` tokens), generation, ROUGE.

    ``match_reference_length``: a reference shorter than ``max_new_tokens`` tokens is compared
    with a continuation of as many tokens as it has (MUSE always generates ``max_new_tokens``;
    its News references are that long, so nothing changes there, but on short documents a
    fixed 128-token continuation runs into the next document and caps the F1 well below 1).
    """
    if len(prompts) != len(gts):
        raise ValueError(f"{len(prompts)} prompts but {len(gts)} reference continuations")
    cut = [_truncate_reference(tokenizer, g, max_new_tokens) for g in gts]
    refs = [c[0] for c in cut]
    limits = [c[1] for c in cut] if match_reference_length else None
    gens = greedy_continuations(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens,
                                batch_size=batch_size, limits=limits, progress=progress)
    table = pd.DataFrame({"index": range(len(prompts)), "prompt": list(prompts), "gt": refs, "generation": gens})
    return pd.concat([table, rouge_scores(gens, refs, stemmer=stemmer)], axis=1)


def knowmem_prompt(question: str, icl: Sequence[tuple[str, str]] = (), *, trailing_space: bool = True) -> str:
    """MUSE's KnowMem prompt: in-context examples, then the question (``"Answer: "`` ends with a space)."""
    head = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl)
    return head + f"Question: {question}\nAnswer:" + (" " if trailing_space else "")


def knowmem_table(
    model, tokenizer, questions: Sequence[str], answers: Sequence[str], icl: Sequence[tuple[str, str]] = (), *,
    max_new_tokens: int = 32, batch_size: int = 16, trailing_space: bool = True, stemmer: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per KnowMem question: question, answer, prompt, generation (cut at MUSE's stop strings), ROUGE."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    prompts = [knowmem_prompt(q, icl, trailing_space=trailing_space) for q in questions]
    gens = greedy_continuations(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                stop_strings=KNOWMEM_STOP_STRINGS, progress=progress)
    table = pd.DataFrame({"index": range(len(questions)), "question": list(questions), "answer": list(answers),
                          "prompt": prompts, "generation": gens})
    return pd.concat([table, rouge_scores(gens, list(answers), stemmer=stemmer)], axis=1)


@torch.no_grad()
def text_mia_scores(
    model, tokenizer, texts: Sequence[str], *, max_length: int | None = None, k: float = 0.4, batch_size: int = 8,
) -> pd.DataFrame:
    """Membership scores of whole texts (higher = less member-like): loss, zlib, min_k, min_k_plus_plus.

    Each text is tokenised with BOS (MUSE: ``tokenizer.encode(text)``), cut to ``max_length``
    tokens (default: the model's context length) and every token after the first is scored.
    Min-K% keeps the lowest ``max(1, floor(k n))`` token log-probs (MUSE: ``int(k n)``, NaN
    when that is 0).
    """
    max_length = max_length or model_max_length(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [list(tokenizer(t, add_special_tokens=True)["input_ids"])[:max_length] for t in texts]
    short = [i for i, e in enumerate(encoded) if len(e) < 2]
    if short:
        raise ValueError(f"texts {short[:5]} have fewer than 2 tokens; membership scores need a token to predict")
    model_was_training = model.training
    model.eval()
    columns: dict[str, list[float]] = {}
    try:
        for s in range(0, len(encoded), batch_size):
            chunk = encoded[s : s + batch_size]
            T = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), T), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(chunk), T), dtype=torch.long)
            for b, e in enumerate(chunk):
                ids[b, : len(e)] = torch.tensor(e)
                labels[b, : len(e)] = torch.tensor(e)
                mask[b, : len(e)] = 1
            batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
            logits = forward_logits(model, batch)
            scores = mia_scores_from_logits(logits, labels.to(logits.device), list(texts[s : s + batch_size]), k=k)
            for name, vals in scores.items():
                columns.setdefault(name, []).extend(vals.double().cpu().tolist())
    finally:
        model.train(model_was_training)
    table = pd.DataFrame({"index": range(len(texts)), "num_tokens": [len(e) for e in encoded]})
    for name in sorted(columns):
        table[f"mia_{name}"] = columns[name]
    return table
