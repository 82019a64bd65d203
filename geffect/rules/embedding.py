"""Ghost rule for ``nn.Embedding``: y_{i,t} = W[token_{i,t}].

grad_W f_i = sum_t e_{token_{i,t}} delta_{i,t}^T, hence <grad_W f_i, D> = sum_t <delta_{i,t}, D[token_{i,t}]>.
Rows at ``padding_idx`` receive no gradient in PyTorch, so those positions are skipped.
(``scale_grad_by_freq`` makes the gradient depend on the whole batch; such a module is not
per-sample separable and is left to the fallback, which documents the same assumption.)
"""
from __future__ import annotations

import torch
from torch import nn

from geffect.rules.registry import batch_tokens, register_rule


@register_rule(nn.Embedding)
def embedding_rule(layer: nn.Embedding, inputs: tuple, backprops: torch.Tensor, directions: dict[str, torch.Tensor]):
    if "weight" not in directions:
        return {}
    tokens = batch_tokens(inputs[0])  # (B, T)
    delta = batch_tokens(backprops, layer.embedding_dim)  # (B, T, d)
    rows = directions["weight"][tokens]  # (B, T, d)
    per_token = (rows * delta).sum(dim=-1)  # (B, T)
    if layer.padding_idx is not None:
        per_token = per_token.masked_fill(tokens == layer.padding_idx, 0.0)
    return {"weight": per_token.sum(dim=1)}  # (B,)
