"""Ghost rules for ``nn.LayerNorm`` and ``nn.RMSNorm``: y = xhat * w + b, elementwise.

Per-sample gradients of norm parameters are small (the size of one hidden vector), so they
are computed directly: grad_w f_i = sum_t delta_{i,t} * xhat_{i,t}, grad_b f_i = sum_t delta_{i,t},
then dotted with the direction. xhat is recomputed from the captured input in the compute
dtype.

Hugging Face defines one RMSNorm class per model family. Most (Llama, Mistral, Qwen2/3, Phi-3,
Granite, ...) are copies of Llama's: y = w * (x32 * rsqrt(mean(x32^2) + eps)).to(x.dtype) with
x32 = x in float32, so dy/dw is that normalised input *after* the cast back to the input dtype
(also in float64 models, where it was computed in float32). They get
:func:`hf_llama_rms_norm_rule`, which recomputes exactly that tensor; a class is accepted only
if its ``forward`` compiles to the same bytecode as ``LlamaRMSNorm.forward`` (same operations,
same attribute names), so a family that differs (Gemma's ``1 + w`` in float32, OLMo-2's cast
after the multiply) keeps the exact forward-mode fallback, at the cost of one extra norm
evaluation per call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geffect.rules.registry import batch_sum, register_rule, register_rule_matcher


def _affine(xhat: torch.Tensor, delta: torch.Tensor, directions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if "weight" in directions:
        out["weight"] = batch_sum(delta * xhat * directions["weight"])  # (B, T, d) -> (B,)
    if "bias" in directions:
        out["bias"] = batch_sum(delta * directions["bias"])  # (B, T, d) -> (B,)
    return out


@register_rule(nn.LayerNorm)
def layer_norm_rule(layer: nn.LayerNorm, inputs: tuple, backprops: torch.Tensor, directions: dict[str, torch.Tensor]):
    x = inputs[0].to(backprops.dtype)  # (B, ..., d)
    xhat = F.layer_norm(x, layer.normalized_shape, eps=layer.eps)  # (B, ..., d), no affine
    return _affine(xhat, backprops, directions)


if hasattr(nn, "RMSNorm"):

    @register_rule(nn.RMSNorm)
    def rms_norm_rule(layer: nn.RMSNorm, inputs: tuple, backprops: torch.Tensor, directions: dict[str, torch.Tensor]):
        x = inputs[0]
        eps = layer.eps if layer.eps is not None else torch.finfo(x.dtype).eps
        xhat = F.rms_norm(x.to(backprops.dtype), layer.normalized_shape, eps=eps)  # (B, ..., d)
        return _affine(xhat, backprops, directions)


def hf_llama_rms_norm_rule(layer: nn.Module, inputs: tuple, backprops: torch.Tensor, directions: dict[str, torch.Tensor]):
    """Rule for Hugging Face's Llama-style RMSNorm classes (see the module docstring)."""
    x = inputs[0]
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + layer.variance_epsilon)
    xhat = h.to(x.dtype).to(backprops.dtype)  # the tensor the weight multiplies, in the compute dtype
    return _affine(xhat, backprops, directions)


def _code_signature(fn) -> tuple:
    code = fn.__code__
    consts = tuple(c for c in code.co_consts if not isinstance(c, (str, type(None))))  # docstrings aside
    return code.co_code, code.co_names, code.co_varnames, consts


def _is_hf_llama_rms_norm(t: type) -> bool:
    if not (t.__name__.endswith("RMSNorm") and t.__module__.startswith("transformers.models.")):
        return False
    try:
        from transformers.models.llama.modeling_llama import LlamaRMSNorm
    except ImportError:  # pragma: no cover - transformers without Llama
        return False
    forward = getattr(t, "forward", None)
    return forward is not None and hasattr(forward, "__code__") and (
        _code_signature(forward) == _code_signature(LlamaRMSNorm.forward))


register_rule_matcher(_is_hf_llama_rms_norm, hf_llama_rms_norm_rule)
