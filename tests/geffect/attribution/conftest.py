"""The shared reference of the attribution tests: a float64 tiny Llama, its calibration batches and
Σ_i ∇R(x_i) over the forget and retain instances by one autograd call per instance."""
from __future__ import annotations

import pytest

from attribution_common import make_batches, per_instance_grad_sum, tiny_model


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    model.eval()
    forget, retain = make_batches(seed=1), make_batches(n_batches=1, bsz=4, seed=2)
    g_f, n_f = per_instance_grad_sum(model, forget)
    g_r, n_r = per_instance_grad_sum(model, retain)
    return model, forget, retain, g_f, n_f, g_r, n_r
