"""Tokenise one QA pair: prompt tokens masked with IGNORE_INDEX (-100), answer tokens and EOS kept.

The prompt and prompt+answer are tokenised separately and the prompt length is the shared
prefix of the two token sequences. A tokenizer that merges characters across the boundary
(e.g. ``"Answer:" + "x"`` becoming one token) shortens that prefix; the merged token then
counts as an answer token, so no answer character is ever masked. BOS is whatever the
tokenizer adds; EOS is appended (and labelled) when the tokenizer has one, so the model learns
to stop (TOFU / open-unlearning do the same).
"""
from __future__ import annotations

import logging

from geffect.losses import IGNORE_INDEX

from .errors import DataError
from .templates import PromptTemplate, get_template

logger = logging.getLogger(__name__)


def _encode(tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def _shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _strip_auto_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids[:-1] if eos is not None and ids and ids[-1] == eos else ids


def prompt_and_answer_ids(tokenizer, question: str, answer: str, template: PromptTemplate) -> tuple[list[int], int]:
    """(token ids of prompt + answer without the final EOS, number of prompt tokens)."""
    prompt = template.format_prompt(question)
    text = prompt + template.format_answer(answer)
    eos = getattr(tokenizer, "eos_token_id", None)
    prompt_ids = _strip_auto_eos(_encode(tokenizer, prompt, template.add_special_tokens), eos)
    full_ids = _strip_auto_eos(_encode(tokenizer, text, template.add_special_tokens), eos)
    n_prompt = _shared_prefix(prompt_ids, full_ids)
    if n_prompt < len(prompt_ids):
        logger.debug(
            "prompt/answer boundary merged by the tokenizer (%d of %d prompt tokens shared); "
            "the merged token is labelled as answer", n_prompt, len(prompt_ids)
        )
    return full_ids, n_prompt


def tokenize_example(
    tokenizer,
    question: str,
    answer: str,
    *,
    template: PromptTemplate | None = None,
    max_length: int = 512,
    stats: dict[str, int] | None = None,
) -> dict[str, list[int]]:
    """``input_ids``, ``attention_mask`` and ``labels`` (lists of equal length) for one pair.

    ``labels`` is -100 on the prompt tokens; the answer tokens and the appended EOS keep their
    ids. A pair longer than ``max_length`` is cut so that as much of the answer as possible is
    kept: the prompt loses tokens **from the left** (after a leading BOS, which stays) until
    the answer fits, and only an answer longer than ``max_length - 1`` on its own is cut on the
    right (at least one prompt token stays, so the first answer token is scored). A long
    question therefore never drops a row. ``stats`` (optional dict) counts the
    ``rows`` cut and among them ``prompt_cut`` / ``answer_cut``, for the logs and reports. Raises :class:`DataError`
    for an empty answer (no answer token at all).
    """
    if max_length < 2:
        raise DataError(f"max_length={max_length} is too small; use at least the prompt length + 1 (e.g. 512)")
    template = template or get_template(tokenizer)
    ids, n_prompt = prompt_and_answer_ids(tokenizer, question, answer, template)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids = ids + [eos]
    prompt, rest = ids[:n_prompt], ids[n_prompt:]
    if not rest:
        raise DataError(f"no answer token for question {question[:60]!r}: the answer is empty; drop the row or fix it")
    if len(ids) > max_length:
        bos = getattr(tokenizer, "bos_token_id", None)
        head = prompt[:1] if len(prompt) > 1 and bos is not None and prompt[0] == bos else []  # BOS stays
        body = prompt[len(head):]
        # keep the end of the prompt beside the whole answer; at least one prompt token in all
        n_body = min(len(body), max(max_length - len(rest) - len(head), 0 if head else 1))
        cut = head + body[len(body) - n_body:]
        if stats is not None:
            stats["rows"] = stats.get("rows", 0) + 1
            stats["prompt_cut"] = stats.get("prompt_cut", 0) + int(len(cut) < len(prompt))
            stats["answer_cut"] = stats.get("answer_cut", 0) + int(len(cut) + len(rest) > max_length)
        prompt, rest = cut, rest[: max_length - len(cut)]
        ids = prompt + rest
    labels = [IGNORE_INDEX] * len(prompt) + rest
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
