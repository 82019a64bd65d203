"""The forward-mode fallback (modules without a rule) against the micro-batch reference
(tests/geffect/rules/rule_harness.py), and on a whole model through the engine."""
from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from geffect.testing import compare_engines, random_batch, random_direction
from rule_harness import SHAPE_IDS, SHAPES, check_rule, features, padding

TOL = 1e-8  # model-level comparisons (geffect.testing.compare_engines), as in tests/geffect/test_engine.py


class Gated(nn.Module):
    """Owns parameters directly and has a child Linear (whose own rule the fallback must not double count)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.randn(d))
        self.shift = nn.Parameter(torch.randn(d))
        self.inner = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * torch.sigmoid(self.gain) + self.shift**2 * x


@pytest.mark.parametrize("B,T,padded", SHAPES, ids=SHAPE_IDS)
def test_fallback_matches_micro_batches_on_a_custom_module(B, T, padded):
    torch.manual_seed(0)
    layer = Gated(5).double()
    check_rule(layer, (features(B, T, 5),), pad=padding(B, T, padded), uses_rule=False)


@pytest.mark.parametrize("B", [0, 1, 3])
def test_fallback_matches_micro_batches_on_two_inputs(B):
    """nn.Bilinear (no rule): y = x1^T W x2 + b, two batch-first inputs."""
    torch.manual_seed(0)
    check_rule(nn.Bilinear(4, 3, 5).double(), (features(B, 6, 4), features(B, 6, 3, seed=1)), uses_rule=False)


@pytest.mark.parametrize("B", [0, 1, 3])
def test_fallback_matches_micro_batches_on_a_channels_first_conv(B):
    """torch's nn.Conv1d (no rule): channels first, (B, C_in, L) -> (B, C_out, L - k + 1)."""
    torch.manual_seed(0)
    check_rule(nn.Conv1d(3, 4, 2).double(), (features(B, 7, 3).transpose(1, 2),), uses_rule=False)


@pytest.mark.parametrize("B,T,padded", SHAPES, ids=SHAPE_IDS)
def test_fallback_matches_micro_batches_on_gemma_rms_norm(B, T, padded):
    """GemmaRMSNorm (1 + w, computed in float32 even for float64 inputs) is served by the fallback;
    both sides differentiate float32 arithmetic, so they agree to float32 rounding only."""
    norm_cls = importlib.import_module("transformers.models.gemma.modeling_gemma").GemmaRMSNorm
    norm = norm_cls(6)
    with torch.no_grad():
        norm.weight.normal_()
    check_rule(norm.double(), (features(B, T, 6),), pad=padding(B, T, padded), uses_rule=False, tol=1e-5)


class ScaleShift(nn.Module):
    """Owns parameters directly, has a child Linear, returns a tuple: exercises the fallback."""

    def __init__(self, d):
        super().__init__()
        self.gain = nn.Parameter(torch.randn(d))
        self.shift = nn.Parameter(torch.randn(d))
        self.inner = nn.Linear(d, d)

    def forward(self, x):
        y = self.inner(x) * torch.sigmoid(self.gain) + self.shift**2
        return y, y.sum(-1)


class ToyLM(nn.Module):
    def __init__(self, vocab=20, d=6, tie=True):
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.blocks = nn.ModuleList([ScaleShift(d) for _ in range(2)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)  # (B, T, d)
        for block in self.blocks:
            y, s = block(h)
            h = h + y + 0.1 * s.unsqueeze(-1)
        return self.head(self.norm(h))  # (B, T, V)


def test_fallback_module_padding_idx_and_tied_weights():
    torch.manual_seed(0)
    model = ToyLM().double()
    batch = random_batch(20, batch_size=4)  # pads with token 0 = padding_idx
    assert int((batch["input_ids"] == 0).sum()) > 0
    direction = random_direction(model, seed=5)
    assert compare_engines(model, batch, direction) < TOL
    assert compare_engines(model, batch, direction, loss="logprob") < TOL


