"""Ghost rules for ``nn.LayerNorm`` and ``nn.RMSNorm``: y = xhat * w + b, elementwise.

Per-sample gradients of norm parameters are small (the size of one hidden vector), so they
are computed directly: grad_w f_i = sum_t delta_{i,t} * xhat_{i,t}, grad_b f_i = sum_t delta_{i,t},
then dotted with the direction. xhat is recomputed from the captured input in the compute
dtype. Hugging Face's family-specific RMSNorm classes (LlamaRMSNorm, ...) differ in details
(computation dtype, ``1 + w`` offsets), so they are not matched here: the exact forward-mode
fallback handles them at the cost of one extra norm evaluation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geffect.rules.registry import batch_sum, register_rule


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
