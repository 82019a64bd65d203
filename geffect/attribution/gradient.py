"""``gradient``: |g_f,j|, the forget-gradient saliency (SalUn-style; a baseline of WAGLE, Jia et al., NeurIPS 2024)."""
from __future__ import annotations

import torch

from geffect.attribution.registry import ScoringContext, register_scorer
from geffect.distributed import wrap_like


@register_scorer("gradient")
def gradient_scores(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """|g_f| with g_f = Σ_{x in forget} ∇R(x) (divided by the count under ``reduction="mean"``)."""
    g_f = ctx.gradient("forget")
    return {n: wrap_like(g_f.pop(n).abs_(), p) for n, p in ctx.params.items()}  # in place in the accumulators
