"""Extraction strength and exact memorisation vs brute-force greedy decoding on tiny random models."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from unlearning.metrics import exact_memorization, extraction_strength
from unlearning.metrics.extraction import correct_suffix_length

V, EOS, PAD = 40, 1, 0


def _tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, eos_token_id=EOS, pad_token_id=PAD, bos_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


@torch.no_grad()
def _greedy(model, ids: list[int], n: int) -> list[int]:
    ctx = list(ids)
    for _ in range(n):
        nxt = int(model(input_ids=torch.tensor([ctx])).logits[0, -1].argmax())
        ctx.append(nxt)
    return ctx[len(ids):]


def _batch(prompts: list[list[int]], answers: list[list[int]]) -> dict[str, torch.Tensor]:
    """Right-padded batch; answers get EOS appended; labels -100 on prompt and padding."""
    seqs = [p + a + [EOS] for p, a in zip(prompts, answers)]
    T = max(map(len, seqs))
    ids = torch.full((len(seqs), T), PAD)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    lab = torch.full((len(seqs), T), -100)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        lab[i, len(p): len(s)] = torch.tensor(s[len(p):])
    return {"input_ids": ids, "attention_mask": att, "labels": lab}


def brute_force_es(model, prompt: list[int], answer: list[int]) -> float:
    """ES by definition: smallest prefix k after which greedy decoding reproduces answer[k:] exactly."""
    L = len(answer)
    for k in range(L + 1):
        if _greedy(model, prompt + answer[:k], L - k) == answer[k:]:
            return 1.0 - k / L
    raise AssertionError("unreachable: k = L always reproduces the empty rest")


def _cases(model, gen: torch.Generator):
    """Answers = m random tokens then the model's own greedy continuation, for varied m and lengths."""
    prompts, answers = [], []
    for i, (plen, m, L) in enumerate([(3, 0, 5), (5, 2, 7), (4, 4, 4), (2, 1, 9), (6, 3, 6), (3, 8, 8)]):
        p = torch.randint(3, V, (plen,), generator=gen).tolist()
        head = torch.randint(3, V, (m,), generator=gen).tolist()
        answers.append(head + _greedy(model, p + head, L - m))
        prompts.append(p)
    return prompts, answers


def test_es_matches_brute_force_greedy_decoding():
    model = _tiny_llama(0)
    gen = torch.Generator().manual_seed(1)
    prompts, answers = _cases(model, gen)
    # the greedy continuation must not contain EOS (it would be stripped); replace it if so
    answers = [[t if t != EOS else 3 for t in a] for a in answers]
    batch = _batch(prompts, answers)
    fast = extraction_strength(model, batch)  # EOS id from model.config
    ref = torch.tensor([brute_force_es(model, p, a) for p, a in zip(prompts, answers)])
    torch.testing.assert_close(fast, ref.to(fast.dtype))
    assert fast[0] == 1.0  # fully greedy answer
    assert len(set(fast.tolist())) >= 3  # the cases really differ


def test_correct_suffix_length_ignores_masked_positions():
    matches = torch.tensor([[0, 1, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    mask = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    assert correct_suffix_length(matches, mask).tolist() == [2, 2, 0]


def test_eos_is_excluded_and_em_counts_tokens():
    model = _tiny_llama(0)
    p = [5, 6, 7]
    a = _greedy(model, p, 4)
    a = [t if t != EOS else 3 for t in a]
    batch = _batch([p], [a])
    # the EOS after a fully greedy answer is usually mispredicted: with EOS counted ES would be 0
    assert extraction_strength(model, batch).item() == pytest.approx(brute_force_es(model, p, a))
    # exact memorisation: the fraction of answer tokens the teacher-forced argmax gets, by brute force
    # (all of them when greedy decoding never emitted EOS, else fewer after the replaced token)
    expected = sum(_greedy(model, p + a[:j], 1)[0] == a[j] for j in range(len(a))) / len(a)
    assert exact_memorization(model, batch).item() == pytest.approx(expected)


def test_es_one_after_memorising_and_near_zero_for_random_answer():
    torch.manual_seed(0)
    model = _tiny_llama(3).train()
    prompt, answer = [4, 9, 12, 7], [20, 21, 5, 33, 8, 17, 26, 30]
    batch = _batch([prompt], [answer])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    assert extraction_strength(model, batch).item() == 1.0
    assert exact_memorization(model, batch).item() == 1.0
    # unrelated random answers to unrelated prompts: almost nothing is extractable
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, V, (4,), generator=gen).tolist() for _ in range(8)]
    answers = [torch.randint(3, V, (8,), generator=gen).tolist() for _ in range(8)]
    es = extraction_strength(_tiny_llama(7), _batch(prompts, answers))
    assert es.mean().item() < 0.1
