"""analyses.attributions.token_attributions: integrated gradients on the input embeddings.

Completeness (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks", Prop. 1): the
attributions of all inputs sum to f(x) - f(x'), for f = log p(answer | question) summed over
answer tokens and x' the baseline (answer tokens replaced by the pad token, prompt kept). The
prompt positions equal their baseline, so their attributions are exactly 0 and the returned
answer positions carry the whole difference. Captum approximates the path integral with an
n-point Gauss-Legendre rule; on this tiny model the relative completeness error measured
1e-1 to 2e-1 at 4 points, 3e-5 to 1e-4 at 16, 1e-9 to 1e-8 at 32 and, at 64, 3e-9 to 2e-7 (the
float32 rounding of the returned values); see docs/attribution.md. The bound at 64 points
(1e-5) is loose by ~50x yet tight enough to catch a wrong baseline, a wrong target or misplaced
positions. A second, hand-written IG (midpoint rule, 512 points, float64, on
``inputs_embeds``) checks every position's value.
"""
from __future__ import annotations

import copy

import pytest
import torch

from analyses.attributions import token_attributions
from geffect.losses import answer_logprob
from unlearning.data import PLAIN, tokenize_example

QA = [("Where was the author Mara Quill born?", "Mara Quill was born in Lisbon, Portugal, in 1961."),
      ("What is the capital of France?", "The capital of France is Paris.")]


@pytest.fixture(scope="module")
def model64(tiny_llama):
    return copy.deepcopy(tiny_llama).double().eval()


@pytest.fixture(scope="module")
def examples(tiny_tokenizer):
    out = []
    for k, (q, a) in enumerate(QA):
        ex = tokenize_example(tiny_tokenizer, q, a, template=PLAIN)
        out.append({key: torch.tensor(v) for key, v in ex.items()} | {"index": torch.tensor(10 + k)})
    return out


def _f(model, ids, labels) -> float:
    with torch.no_grad():
        return float(answer_logprob(model(input_ids=ids[None]).logits, labels[None])[0])


def _baseline(ex, pad_id):
    return torch.where(ex["labels"] == -100, ex["input_ids"], torch.full_like(ex["input_ids"], pad_id))


def _completeness_error(model, tok, ex, n_steps) -> tuple[float, float]:
    frame = token_attributions(model, tok, [ex], model_name="m", n_steps=n_steps)
    delta = _f(model, ex["input_ids"], ex["labels"]) - _f(model, _baseline(ex, tok.pad_token_id), ex["labels"])
    return abs(float(frame["attribution"].sum()) - delta) / abs(delta), delta


def test_completeness_within_the_quadrature_error(model64, tiny_tokenizer, examples):
    for ex in examples:
        errs = {n: _completeness_error(model64, tiny_tokenizer, ex, n)[0] for n in (4, 64)}
        delta = _completeness_error(model64, tiny_tokenizer, ex, 64)[1]
        assert abs(delta) > 0.1, delta  # the baseline really changes f, so the sum is not trivially 0
        assert errs[64] < 1e-5, errs
        assert errs[4] > 1e3 * errs[64], errs  # the error is the quadrature's: it shrinks with more points


def _manual_ig(model, ex, pad_id, steps=512) -> torch.Tensor:
    """IG per position, by hand: midpoint rule on the straight path between the two embeddings."""
    emb = model.get_input_embeddings()
    ids, labels = ex["input_ids"][None], ex["labels"][None]
    with torch.no_grad():
        x, x0 = emb(ids), emb(_baseline(ex, pad_id)[None])  # (1, T, d)
    total = torch.zeros_like(x)
    for k in range(steps):
        point = (x0 + (k + 0.5) / steps * (x - x0)).requires_grad_(True)
        f = answer_logprob(model(inputs_embeds=point).logits, labels).sum()
        (g,) = torch.autograd.grad(f, point)
        total += g
    return ((x - x0) * total / steps).sum(dim=-1)[0]  # (T,)


def test_every_position_matches_a_hand_written_ig(model64, tiny_tokenizer, examples):
    frame = token_attributions(model64, tiny_tokenizer, examples, model_name="ga", n_steps=64)
    assert set(frame["model"]) == {"ga"} and sorted(set(frame["example"])) == [10, 11]
    for ex in examples:
        answer = (ex["labels"] != -100).nonzero().flatten().tolist()
        rows = frame[frame["example"] == int(ex["index"])].sort_values("position")
        assert rows["position"].tolist() == list(range(len(answer)))
        assert rows["token"].tolist() == [tiny_tokenizer.decode([int(ex["input_ids"][t])]) for t in answer]
        manual = _manual_ig(model64, ex, tiny_tokenizer.pad_token_id)
        prompt = [t for t in range(len(manual)) if t not in answer]
        assert torch.all(manual[prompt] == 0)  # input == baseline there
        torch.testing.assert_close(torch.tensor(rows["attribution"].tolist(), dtype=torch.float64), manual[answer],
                                   rtol=1e-3, atol=1e-5)  # midpoint rule error at 512 points: ~3e-6


def test_mode_restored(model64, tiny_tokenizer, examples):
    model64.train()
    try:
        token_attributions(model64, tiny_tokenizer, examples[:1], model_name="m", n_steps=4)
        assert model64.training
    finally:
        model64.eval()
