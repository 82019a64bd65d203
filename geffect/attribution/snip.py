"""``snip``: |θ_j · g_f,j|, connection sensitivity (Lee et al., ICLR 2019); the γ → ∞ limit of ``wagle``."""
from __future__ import annotations

import torch

from geffect.attribution.registry import ScoringContext, register_scorer
from geffect.distributed import local, wrap_like


@register_scorer("snip")
def snip_scores(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """|θ · g_f| with g_f = Σ_{x in forget} ∇R(x), computed in place in the g_f accumulators."""
    g_f = ctx.gradient("forget")
    return {n: wrap_like(g_f.pop(n).mul_(local(p).detach()).abs_(), p) for n, p in ctx.params.items()}
