"""Random scores (geffect/attribution/random.py): seeded and deterministic."""
from __future__ import annotations

import torch

from geffect.attribution import attribute_weights


def test_random_is_seeded(setup):
    model = setup[0]
    a = attribute_weights(model, None, method="random", seed=3)
    b = attribute_weights(model, None, method="random", seed=3)
    c = attribute_weights(model, None, method="random", seed=4)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)
