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
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from geffect.losses import answer_mask

__all__ = ["generate_answers", "rouge_l_recall", "prompt_ids_from_batch"]

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


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 200,
    batch_size: int = 16,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts`` (decoded, special tokens and text after EOS removed).

    Batches of ``batch_size`` prompts are left-padded and decoded with ``model.generate``
    (``do_sample=False``); set ``batch_size=1`` for one-at-a-time decoding.
    """
    if len(prompts) == 0:
        return []
    if isinstance(prompts[0], str):
        seqs = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    else:
        seqs = [list(map(int, p)) for p in prompts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token first")
    device = next(model.parameters()).device
    # Sort by length so batches waste little padding; restore the order at the end.
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    texts: list[str | None] = [None] * len(seqs)
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(order), batch_size)
        for s in tqdm(starts, desc="generate", disable=not progress, leave=False):
            idx = order[s : s + batch_size]
            ids, mask = _left_pad([seqs[i] for i in idx], pad_id)  # (B, T), (B, T)
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )  # (B, T + new)
            new = out[:, ids.shape[1]:].cpu()  # (B, new)
            for row, i in zip(new.tolist(), idx):
                if tokenizer.eos_token_id is not None and tokenizer.eos_token_id in row:
                    row = row[: row.index(tokenizer.eos_token_id)]
                texts[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return texts  # type: ignore[return-value]


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
