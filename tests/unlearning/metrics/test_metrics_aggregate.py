"""Truth-ratio scores, forget quality (KS) and model utility on hand-made numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from unlearning.metrics import (
    forget_quality,
    forget_truth_ratio,
    model_utility,
    probability_with_options,
    truth_ratio_from_nll,
    utility_keys,
    utility_truth_ratio,
)
from unlearning.metrics.aggregate import ks_statistic


def test_truth_ratio_from_hand_made_losses():
    para = torch.tensor([1.0, 2.0, 0.5])
    pert = torch.tensor([[2.0, 2.0], [1.0, 3.0], [0.5, 0.5]])  # means 2, 2, 0.5
    r = truth_ratio_from_nll(para, pert)
    torch.testing.assert_close(r, torch.tensor([math.exp(-1.0), 1.0, 1.0]))
    # geometric mean of length-normalised probabilities over the paraphrase's, written out
    gm = torch.exp(-pert).prod(dim=1) ** (1 / 2)
    torch.testing.assert_close(r, gm / torch.exp(-para))
    assert forget_truth_ratio(r.numpy()) == pytest.approx((math.exp(-1) + 1 + 1) / 3)
    assert utility_truth_ratio(r.numpy()) == pytest.approx((1 - math.exp(-1)) / 3)
    # forget score is symmetric in R <-> 1/R; utility score clips at 0
    assert forget_truth_ratio([2.0, 0.5]) == pytest.approx(0.5)
    assert utility_truth_ratio([2.0, 0.5]) == pytest.approx(0.25)


def test_forget_quality_is_scipy_ks_pvalue_and_invariant_to_reciprocal():
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 0.5, 300), rng.lognormal(0.3, 0.5, 300)
    assert forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic)
    # TOFU tests 1/R; same p-value
    assert forget_quality(1 / a, 1 / b) == pytest.approx(forget_quality(a, b))
    assert forget_quality(a, a) == pytest.approx(1.0)
    # hand-made: fully separated samples of 3 vs 3 -> D = 1, exact p = 2/C(6,3) = 0.1
    assert forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)


def test_model_utility_is_harmonic_mean_of_nine():
    vals = dict(zip(utility_keys(), [0.9, 0.8, 0.5, 0.4, 0.45, 0.5, 0.4, 0.75, 0.5]))
    expected = 9 / sum(1 / v for v in vals.values())
    assert model_utility(vals) == pytest.approx(expected)
    vals["world_facts/truth_ratio"] = 0.0
    assert model_utility(vals) == 0.0
    with pytest.raises(KeyError, match="real_authors/probability"):
        model_utility({k: v for k, v in vals.items() if k != "real_authors/probability"})


def test_probability_with_options():
    true = torch.tensor([1.0, 0.0])
    pert = torch.tensor([[1.0, 1.0, 1.0], [2.0, 3.0, 4.0]])
    got = probability_with_options(true, pert)
    q = [math.exp(-x) for x in (2.0, 3.0, 4.0)]
    torch.testing.assert_close(got, torch.tensor([0.25, 1 / (1 + sum(q))]))
    # long answers have large summed NLLs; only differences matter (a softmax), so no underflow to 0/0
    far = probability_with_options(torch.tensor([1000.0]), torch.tensor([[1001.0, 1002.0, 1003.0]]))
    torch.testing.assert_close(far, torch.tensor([1 / (1 + sum(math.exp(-k) for k in (1, 2, 3)))]))


def test_model_level_functions_agree_with_logit_level(tiny_llama):
    """answer_probability / truth_ratio on a model equal the formulas applied to its logits."""
    from geffect.losses import answer_nll
    from unlearning.metrics import answer_probability, truth_ratio

    torch.manual_seed(0)
    V = tiny_llama.config.vocab_size
    ids = torch.randint(3, V, (6, 9))
    labels = ids.clone()
    labels[:, :4] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    with torch.no_grad():
        nll = answer_nll(tiny_llama(input_ids=ids).logits, labels)  # (6,)
    torch.testing.assert_close(answer_probability(tiny_llama, batch), torch.exp(-nll))
    para = {k: v[:2] for k, v in batch.items()}  # 2 instances, K = 2 perturbed rows each (rows 2..5)
    pert = {k: v[2:] for k, v in batch.items()}
    torch.testing.assert_close(truth_ratio(tiny_llama, para, pert), torch.exp(nll[:2] - nll[2:].view(2, 2).mean(1)))
