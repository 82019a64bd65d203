"""Ghost rule of transformers' GPT-2 ``Conv1D`` (weight stored (d_in, d_out)) against the micro-batch
reference (tests/geffect/rules/rule_harness.py)."""
from __future__ import annotations

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from rule_harness import SHAPE_IDS, SHAPES, check_rule, features, padding


@pytest.mark.parametrize("B,T,padded", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("d_in,d_out", [(6, 4), (4, 6)], ids=["narrowing", "widening"])  # both branches of the rule
def test_conv1d_rule_matches_micro_batches(B, T, padded, d_in, d_out):
    torch.manual_seed(0)
    layer = Conv1D(d_out, d_in).double()  # Conv1D(nf=d_out, nx=d_in)
    with torch.no_grad():
        layer.bias.normal_()  # initialised to zeros: make it count
    check_rule(layer, (features(B, T, d_in),), pad=padding(B, T, padded))
