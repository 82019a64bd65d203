"""Greedy answer generation (batched, left-padded) and ROUGE-L recall against the reference answer.

TOFU scores generation with ROUGE-L *recall* (``rouge_score``, stemming on): the fraction of the
reference answer's longest common subsequence covered by the generated answer. Generation is
greedy; TOFU's legacy code caps the total length at 200 tokens, open-unlearning generates up to
200 new tokens (our default ``max_new_tokens=200``).

Decoder-only models must be padded on the **left** for batched generation, so every prompt ends
at the same position and the first generated token follows the prompt directly; the attention
mask hides the padding and transformers derives position ids from it.

Signature design: generation needs the tokenizer (to decode, and for the pad/EOS ids) and the
prompts. ``prompts`` may be strings (tokenised here, no special tokens added beyond what the
tokenizer adds by default) or lists of token ids (e.g. the prompt part of an already tokenised
example, which guarantees the model sees exactly the training-time prompt tokens).

:func:`greedy_continuations` is the one generation loop (MUSE's decoding: stop strings,
per-prompt token limits, text not stripped); :func:`generate_answers` is TOFU's use of it.
:func:`rouge_scores` gives the ROUGE-L / ROUGE-1 F1 and recall MUSE reports.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

import pandas as pd
from transformers import StoppingCriteria, StoppingCriteriaList

from geffect.losses import answer_mask

__all__ = ["cut_at_stop_strings", "generate_answers", "greedy_continuations", "model_max_length",
           "prompt_ids_from_batch", "rouge_l_recall", "rouge_scores"]

logger = logging.getLogger(__name__)


def prompt_ids_from_batch(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """The prompt tokens of each row of a right-padded batch: everything before the first answer label."""
    ids = batch["input_ids"]
    labels = batch["labels"]
    attn = batch["attention_mask"]
    answers = answer_mask(labels)  # (B, T); column 0 never counts
    out = []
    for i in range(ids.shape[0]):
        answer_pos = torch.nonzero(answers[i]).flatten()
        if answer_pos.numel() == 0:
            raise ValueError(f"row {i} has no answer tokens; cannot find where its prompt ends")
        start = int(answer_pos[0])
        row = ids[i, :start][attn[i, :start].bool()]
        out.append(row.tolist())
    return out


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad id lists to (B, T) input_ids and attention_mask."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, T - len(s):] = 1
    return ids, mask


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


def generate_answers(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 200,
    batch_size: int = 16,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded, special tokens and text after EOS removed, stripped).

    Batches of ``batch_size`` prompts are left-padded and decoded with ``model.generate``
    (``do_sample=False``); set ``batch_size=1`` for one-at-a-time decoding. The TOFU answers of
    :func:`greedy_continuations`, with surrounding white space removed.
    """
    texts = greedy_continuations(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 progress=progress)
    return [t.strip() for t in texts]


_SCORER = None


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> torch.Tensor:
    """ROUGE-L recall of each prediction against its reference (``rouge_score``, stemmer on): (N,)."""
    global _SCORER
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if _SCORER is None:
        from rouge_score import rouge_scorer  # heavy (nltk); only ROUGE needs it, on first use

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    vals = [_SCORER.score(ref, pred)["rougeL"].recall for pred, ref in zip(predictions, references)]
    return torch.tensor(vals, dtype=torch.float64)


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
