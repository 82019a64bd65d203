"""Ghost rules of ``nn.LayerNorm``, ``nn.RMSNorm`` and Hugging Face's Llama-style RMSNorm copies against
the micro-batch reference (tests/geffect/rules/rule_harness.py), and which HF norms the matcher accepts."""
from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from rule_harness import SHAPE_IDS, SHAPES, check_rule, features, padding

D = 6


def _randomised(norm: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_()
    return norm.double()


@pytest.mark.parametrize("B,T,padded", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_rule_matches_micro_batches(B, T, padded, bias):
    torch.manual_seed(0)
    check_rule(_randomised(nn.LayerNorm(D, bias=bias)), (features(B, T, D),), pad=padding(B, T, padded))


@pytest.mark.parametrize("B,T,padded", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("eps", [None, 1e-5])
def test_rms_norm_rule_matches_micro_batches(B, T, padded, eps):
    torch.manual_seed(0)
    check_rule(_randomised(nn.RMSNorm(D, eps=eps)), (features(B, T, D),), pad=padding(B, T, padded))


@pytest.mark.parametrize("B,T,padded", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("module,cls", [("llama", "LlamaRMSNorm"), ("mistral", "MistralRMSNorm"),
                                        ("qwen2", "Qwen2RMSNorm")])
def test_hf_llama_rms_norm_rule_matches_micro_batches(B, T, padded, module, cls):
    """The matched HF norms compute in float32 even for float64 inputs; the rule recomputes that
    tensor, so it still equals the reference's autograd to float64 rounding."""
    check_rule(_hf_norm(module, cls, hidden=D).double(), (features(B, T, D),), pad=padding(B, T, padded))


def _hf_norm(module: str, cls: str, hidden: int = 8):
    norm = getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), cls)(hidden)
    with torch.no_grad():
        norm.weight.normal_()
    return norm


@pytest.mark.parametrize("module,cls,matched", [
    ("llama", "LlamaRMSNorm", True), ("mistral", "MistralRMSNorm", True), ("qwen2", "Qwen2RMSNorm", True),
    ("phi3", "Phi3RMSNorm", True), ("gemma", "GemmaRMSNorm", False), ("olmo2", "Olmo2RMSNorm", False)])
def test_hf_rms_norms_matched_by_their_forward(module, cls, matched):
    """Llama-style RMSNorm copies get the dedicated rule; families whose forward differs (Gemma's
    1 + w in float32, OLMo-2's cast after the multiply) keep the fallback; a user subclass that
    overrides forward is not matched either."""
    from geffect.rules import get_rule
    from geffect.rules.norm import hf_llama_rms_norm_rule

    norm = _hf_norm(module, cls)
    assert (get_rule(norm) is hf_llama_rms_norm_rule) == matched

    class Scaled(type(norm)):
        def forward(self, x):
            return 2 * super().forward(x)

    assert get_rule(Scaled(8)) is None


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6), (torch.bfloat16, 2e-2)])
def test_hf_rms_norm_rule_equals_the_fallback(dtype, tol):
    """The rule reproduces the exact forward-mode derivative of LlamaRMSNorm (whose forward runs in
    float32 even for float64 inputs, then casts back before the weight multiplies)."""
    from geffect.rules import fallback_tangents, get_rule
    from geffect.rules.registry import batch_sum

    norm = _hf_norm("llama", "LlamaRMSNorm", hidden=16).to(dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=g, dtype=torch.float64).to(dtype)
    delta = torch.randn(3, 5, 16, generator=g, dtype=torch.float64)
    D = torch.randn(16, generator=g, dtype=torch.float64)
    cdtype = torch.float64 if dtype == torch.float64 else torch.float32
    rule = get_rule(norm)(norm, (x,), delta.to(cdtype), {"weight": D.to(cdtype)})["weight"]
    tangent = fallback_tangents(norm, (x,), {}, {"weight": D})["weight"][0]
    reference = batch_sum(delta * tangent.double())
    assert rule.shape == (3,) and rule.dtype == cdtype
    assert float((rule.double() - reference).norm() / reference.norm()) < tol
