"""MIA scores and the rank-based AUC vs brute-force pair counting."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from unlearning.metrics import mia_auc, privleak
from unlearning.metrics.mia import min_k_plus_plus_score, min_k_score, mia_scores_from_logits


def brute_auc(f, h) -> float:
    wins = sum((y > x) + 0.5 * (y == x) for x in f for y in h)
    return wins / (len(f) * len(h))


def test_auc_matches_pair_count_with_ties():
    rng = np.random.default_rng(0)
    f = rng.integers(0, 6, 37).astype(float)  # many ties
    h = rng.integers(2, 9, 23).astype(float)
    assert mia_auc(f, h) == pytest.approx(brute_auc(f, h))
    assert mia_auc([1, 2], [3, 4]) == 1.0 and mia_auc([3, 4], [1, 2]) == 0.0
    assert mia_auc([1, 1], [1, 1]) == 0.5


def test_privleak():
    assert privleak(0.5) == 0.0
    assert privleak(1.0) == pytest.approx(-100.0)
    assert privleak(0.6, 0.6) == 0.0
    assert privleak(0.3, 0.6) == pytest.approx((0.7 - 0.4) / 0.4 * 100)


def _logits_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5, 6, 7], [-100, 1, 2, 9, -100, -100, -100]])
    return logits, labels


def test_min_k_scores_by_hand():
    logits, labels = _logits_labels()
    logp = torch.log_softmax(logits, -1)
    for i in range(2):
        pos = [t for t in range(1, 7) if labels[i, t] != -100]
        lps = sorted(float(logp[i, t - 1, labels[i, t]]) for t in pos)
        m = max(1, int(0.4 * len(pos)))
        assert min_k_score(logits, labels)[i].item() == pytest.approx(-sum(lps[:m]) / m, rel=1e-5)
        zs = []
        for t in pos:
            lp = logp[i, t - 1]
            mu = float((lp.exp() * lp).sum())
            sd = math.sqrt(float((lp.exp() * lp**2).sum()) - mu**2)
            zs.append((float(lp[labels[i, t]]) - mu) / sd)
        zs.sort()
        assert min_k_plus_plus_score(logits, labels)[i].item() == pytest.approx(-sum(zs[:m]) / m, rel=1e-4)


def test_zlib_and_keys():
    logits, labels = _logits_labels()
    texts = ["an answer", "another answer text"]
    s = mia_scores_from_logits(logits, labels, texts)
    assert set(s) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    for i, t in enumerate(texts):
        assert s["zlib"][i].item() == pytest.approx(s["loss"][i].item() / len(zlib.compress(t.encode())))


def test_min_k_leaves_out_the_trailing_eos_like_open_unlearning():
    """open-unlearning's tokenwise_logprobs drops the last labelled token (the EOS) for Min-k% / Min-k%++,
    while LOSS and zlib average over every labelled token (evaluate_probability)."""
    logits, labels = _logits_labels()
    eos = 7  # row 0 ends with label 7 (its EOS here); row 1 ends with 9 (no EOS)
    logp = torch.log_softmax(logits, -1)
    with_eos = mia_scores_from_logits(logits, labels, ["a", "b"])
    without = mia_scores_from_logits(logits, labels, ["a", "b"], eos_token_id=eos)
    pos0 = [2, 3, 4, 5]  # row 0's answer positions without the EOS at column 6
    lps = sorted(float(logp[0, t - 1, labels[0, t]]) for t in pos0)
    m = max(1, int(0.4 * len(pos0)))
    assert without["min_k"][0].item() == pytest.approx(-sum(lps[:m]) / m, rel=1e-6)
    assert without["min_k"][0].item() != pytest.approx(with_eos["min_k"][0].item(), rel=1e-3)
    assert without["min_k_plus_plus"][0].item() != pytest.approx(with_eos["min_k_plus_plus"][0].item(), rel=1e-3)
    for key in ("min_k", "min_k_plus_plus"):  # row 1 has no EOS: unchanged
        assert without[key][1].item() == pytest.approx(with_eos[key][1].item(), rel=1e-12)
    for key in ("loss", "zlib"):  # EOS kept
        torch.testing.assert_close(without[key], with_eos[key])
