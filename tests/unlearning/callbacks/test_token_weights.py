"""unlearning.callbacks.token_weights: the token-weight summaries, checked against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from unlearning.callbacks import token_weight_stats, weight_vs_likelihood


def test_token_weight_stats_by_hand():
    w = torch.tensor([0.0, 1.0, 1.0, 2.0])
    s = token_weight_stats(w)
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(1.0)
    assert s["std"] == pytest.approx(math.sqrt(0.5))
    assert s["q0"] == 0.0 and s["q100"] == 2.0 and s["q50"] == pytest.approx(1.0)
    q = torch.tensor([0.25, 0.25, 0.5])  # normalised non-zero weights
    assert s["entropy"] == pytest.approx(float(-(q * q.log()).sum()))
    assert s["entropy_norm"] == pytest.approx(s["entropy"] / math.log(4))
    assert s["frac_small"] == pytest.approx(0.25)


def test_token_weight_stats_uniform_has_entropy_one():
    s = token_weight_stats(torch.full((10,), 0.3))
    assert s["entropy_norm"] == pytest.approx(1.0)
    assert s["std"] == pytest.approx(0.0)


def test_token_weight_stats_empty():
    assert token_weight_stats(torch.zeros(0)) == {"n": 0}


def test_weight_vs_likelihood_bins():
    p = torch.tensor([0.05, 0.07, 0.55, 1.0])
    w = torch.tensor([1.0, 3.0, 5.0, 7.0])
    rows = weight_vs_likelihood(w, p.log(), bins=10)
    assert len(rows) == 10
    assert rows[0]["count"] == 2 and rows[0]["mean_weight"] == pytest.approx(2.0)
    assert rows[0]["mean_p"] == pytest.approx(0.06)
    assert rows[5]["count"] == 1 and rows[5]["mean_weight"] == pytest.approx(5.0)
    assert rows[9]["count"] == 1  # p = 1 lands in the last bin
    assert math.isnan(rows[3]["mean_weight"]) and rows[3]["count"] == 0
    assert sum(r["count"] for r in rows) == 4
