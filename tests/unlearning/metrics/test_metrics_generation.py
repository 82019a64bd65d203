"""Batched left-padded greedy generation equals one-at-a-time decoding; ROUGE-L recall by hand."""
from __future__ import annotations

import pytest
import torch

from unlearning.metrics import generate_answers, rouge_l_recall
from unlearning.metrics.generation import prompt_ids_from_batch


def test_batched_generation_matches_one_at_a_time(tiny_llama, tiny_tokenizer):
    prompts = [
        "Question: Where was the author Mara Quill born?\nAnswer:",
        "Question: What is the capital of France?\nAnswer:",
        "Who wrote",
        "Her parents were a baker and a surgeon; she won the Amber Quill Award for",
    ]
    batched = generate_answers(tiny_llama, tiny_tokenizer, prompts, max_new_tokens=8, batch_size=4)
    single = [generate_answers(tiny_llama, tiny_tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert any(len(t) > 0 for t in batched)
    # token-id prompts give the same result as the strings they encode
    ids = [tiny_tokenizer(p)["input_ids"] for p in prompts]
    assert generate_answers(tiny_llama, tiny_tokenizer, ids, max_new_tokens=8, batch_size=3) == batched


def test_prompt_ids_from_right_padded_batch():
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 8, 0], [5, 9, 10, 11, 12]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
        "labels": torch.tensor([[-100, -100, 7, 8, -100], [-100, -100, -100, 11, 12]]),
    }
    assert prompt_ids_from_batch(batch) == [[5, 6], [5, 9, 10]]


def test_rouge_l_recall():
    r = rouge_l_recall(["the cat sat on the mat", "nothing alike", ""], ["the cat sat", "a dog barked loudly", "x y"])
    assert r[0].item() == pytest.approx(1.0)
    assert r[1].item() == 0.0 and r[2].item() == 0.0
    # LCS "cat mat" of a 4-word reference -> recall 2/4
    assert rouge_l_recall(["cat on mat"], ["a cat a mat"])[0].item() == pytest.approx(0.5)
