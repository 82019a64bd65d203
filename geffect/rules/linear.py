"""Ghost rule for ``nn.Linear``: y = a W^T + b.

grad_W f_i = sum_t delta_{i,t} a_{i,t}^T (d_out x d_in), hence

    <grad_W f_i, D> = sum_t delta_{i,t}^T D a_{i,t}         (one (B, T, d_out) matmul a D^T)
    <grad_b f_i, d> = sum_t <delta_{i,t}, d>

The per-sample (d_out x d_in) gradient is never formed. When d_out > d_in (the LM head) the
same number is computed as sum (delta D) * a, whose temporary is (B, T, d_in).
"""
from __future__ import annotations

import torch
from torch import nn

from geffect.rules.registry import batch_tokens, register_rule


@register_rule(nn.Linear)
def linear_rule(layer: nn.Linear, inputs: tuple, backprops: torch.Tensor, directions: dict[str, torch.Tensor]):
    delta = batch_tokens(backprops, layer.out_features)  # (B, T, d_out)
    out: dict[str, torch.Tensor] = {}
    if "weight" in directions:
        a = batch_tokens(inputs[0].to(delta.dtype), layer.in_features)  # (B, T, d_in)
        D = directions["weight"]  # (d_out, d_in)
        if layer.out_features <= layer.in_features:
            proj = a @ D.T  # (B, T, d_in) @ (d_in, d_out) -> (B, T, d_out)
            out["weight"] = (proj * delta).sum(dim=(1, 2))  # (B,)
        else:  # same number, smaller temporary (e.g. the LM head): (delta D) . a
            back = delta @ D  # (B, T, d_out) @ (d_out, d_in) -> (B, T, d_in)
            out["weight"] = (back * a).sum(dim=(1, 2))  # (B,)
    if "bias" in directions:
        out["bias"] = (delta @ directions["bias"]).sum(dim=1)  # (B, T) -> (B,)
    return out
