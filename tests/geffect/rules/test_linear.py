"""Ghost rule of ``nn.Linear`` against the micro-batch reference (tests/geffect/rules/rule_harness.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rule_harness import SHAPE_IDS, SHAPES, check_rule, features, padding


@pytest.mark.parametrize("B,T,padded", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("d_in,d_out", [(6, 4), (4, 6)], ids=["narrowing", "widening"])  # both branches of the rule
@pytest.mark.parametrize("bias", [True, False])
def test_linear_rule_matches_micro_batches(B, T, padded, d_in, d_out, bias):
    torch.manual_seed(0)
    layer = nn.Linear(d_in, d_out, bias=bias).double()
    check_rule(layer, (features(B, T, d_in),), pad=padding(B, T, padded))


@pytest.mark.parametrize("names", [["weight"], ["bias"]])
def test_linear_rule_with_a_partial_direction(names):
    """Only the parameters with a direction get a value (the engine leaves the others out)."""
    torch.manual_seed(0)
    check_rule(nn.Linear(5, 3).double(), (features(3, 4, 5),), names=names)
