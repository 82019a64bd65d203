"""The rule registry: every registered rule has its harness test, lookups are by exact type."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from geffect.rules import get_rule, register_rule, registered_types
from geffect.rules.linear import linear_rule
from geffect.rules.registry import _RULES
from rule_harness import check_rule, features

HERE = Path(__file__).resolve().parent
#: module type -> the test file comparing its rule with the micro-batch reference
COVERED = {nn.Linear: "test_linear.py", nn.Embedding: "test_embedding.py", nn.LayerNorm: "test_norm.py",
           nn.RMSNorm: "test_norm.py", Conv1D: "test_conv1d.py"}


def test_every_registered_rule_has_a_harness_test():
    """A new rule must come with a file of its own here (and an entry in COVERED)."""
    assert set(registered_types()) == set(COVERED), set(registered_types()) ^ set(COVERED)
    for cls, name in COVERED.items():
        text = (HERE / name).read_text()
        assert "check_rule(" in text and cls.__name__ in text, (cls, name)


def test_a_subclass_gets_the_fallback_until_registered():
    """Exact-type lookup: a subclass may change what its forward computes, so it is not matched
    implicitly; the fallback serves it exactly, and registering the rule for it switches over."""

    class ScaledInput(nn.Linear):
        def forward(self, x):
            return super().forward(2 * x)

    class PlainCopy(nn.Linear):
        pass

    torch.manual_seed(0)
    inputs = (features(3, 4, 5),)
    check_rule(ScaledInput(5, 3).double(), inputs, uses_rule=False)
    layer = PlainCopy(5, 3).double()
    check_rule(layer, inputs, uses_rule=False)
    try:
        register_rule(PlainCopy)(linear_rule)
        assert get_rule(layer) is linear_rule
        check_rule(layer, inputs)
    finally:
        del _RULES[PlainCopy]
    assert get_rule(layer) is None
