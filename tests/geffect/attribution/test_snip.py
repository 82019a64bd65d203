"""SNIP scores (geffect/attribution/snip.py) against |θ · g_f| (float64)."""
from __future__ import annotations

from attribution_common import assert_close
from geffect.attribution import attribute_weights


def test_snip_matches_formula(setup):
    model, forget, retain, g_f, *_ = setup
    params = dict(model.named_parameters())
    assert_close(attribute_weights(model, forget, method="snip"),
                 {n: (p.detach() * g_f[n]).abs() for n, p in params.items()})
