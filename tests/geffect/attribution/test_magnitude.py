"""Magnitude scores (geffect/attribution/magnitude.py): |θ|, no data."""
from __future__ import annotations

from attribution_common import assert_close
from geffect.attribution import attribute_weights


def test_magnitude_matches_formula(setup):
    model, forget, retain, g_f, *_ = setup
    params = dict(model.named_parameters())
    assert_close(attribute_weights(model, None, method="magnitude"), {n: p.detach().abs() for n, p in params.items()})
