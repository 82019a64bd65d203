"""WAGLE scores (geffect/attribution/wagle.py) against |(θ − g_r/γ) · g_f| on per-instance reference gradients (float64)."""
from __future__ import annotations

import math

import pytest
import torch

from attribution_common import assert_close
from geffect.attribution import attribute_weights


@pytest.mark.parametrize("gamma", [1e-6, 1e-2])
def test_wagle_matches_formula(setup, gamma):
    model, forget, retain, g_f, _, g_r, _ = setup
    scores = attribute_weights(model, forget, retain, method="wagle", gamma=gamma)
    ref = {n: ((p.detach() - g_r[n] / gamma) * g_f[n]).abs() for n, p in model.named_parameters()}
    assert_close(scores, ref)


def test_gamma_to_infinity_is_snip(setup):
    model, forget, retain, *_ = setup
    snip = attribute_weights(model, forget, method="snip")
    for gamma in (1e12, math.inf):
        wagle = attribute_weights(model, forget, retain, method="wagle", gamma=gamma)
        for n in snip:
            torch.testing.assert_close(wagle[n], snip[n], rtol=1e-4, atol=1e-9)


def test_mean_reduction(setup):
    model, forget, retain, g_f, n_f, g_r, n_r = setup
    gamma = 1e-3
    scores = attribute_weights(model, forget, retain, method="wagle", gamma=gamma, reduction="mean")
    ref = {n: ((p.detach() - g_r[n] / n_r / gamma) * g_f[n] / n_f).abs() for n, p in model.named_parameters()}
    assert_close(scores, ref)
    # mean with gamma equals sum with gamma * n_r, up to the 1/n_f factor on g_f
    s_sum = attribute_weights(model, forget, retain, method="wagle", gamma=gamma * n_r)
    for n in scores:
        torch.testing.assert_close(scores[n] * n_f, s_sum[n], rtol=1e-5, atol=1e-9)
