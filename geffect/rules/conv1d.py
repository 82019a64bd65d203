"""Ghost rule for the GPT-2 ``Conv1D`` of transformers: y = a W + b with W stored (d_in, d_out).

It is a Linear with a transposed weight: grad_W f_i = sum_t a_{i,t} delta_{i,t}^T (d_in x d_out),
so <grad_W f_i, D> = sum_t a_{i,t}^T D delta_{i,t} = sum over (a D) * delta.
Registered only when transformers is importable.
"""
from __future__ import annotations

import torch

from geffect.rules.registry import batch_tokens, register_rule

try:  # transformers is optional for geffect
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover
    Conv1D = None


def conv1d_rule(layer, inputs: tuple, backprops: torch.Tensor, directions: dict[str, torch.Tensor]):
    d_in, d_out = layer.weight.shape
    delta = batch_tokens(backprops, d_out)  # (B, T, d_out)
    out: dict[str, torch.Tensor] = {}
    if "weight" in directions:
        a = batch_tokens(inputs[0].to(delta.dtype), d_in)  # (B, T, d_in)
        D = directions["weight"]  # (d_in, d_out)
        if d_out <= d_in:
            proj = a @ D  # (B, T, d_in) @ (d_in, d_out) -> (B, T, d_out)
            out["weight"] = (proj * delta).sum(dim=(1, 2))  # (B,)
        else:  # smaller temporary: (delta D^T) . a
            back = delta @ D.T  # (B, T, d_out) @ (d_out, d_in) -> (B, T, d_in)
            out["weight"] = (back * a).sum(dim=(1, 2))  # (B,)
    if "bias" in directions:
        out["bias"] = (delta @ directions["bias"]).sum(dim=1)  # (B, T) -> (B,)
    return out


if Conv1D is not None:
    register_rule(Conv1D)(conv1d_rule)
