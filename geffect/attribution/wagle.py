"""``wagle``: the weight attribution of WAGLE (Jia et al., "WAGLE: Strategic Weight Attribution for
Effective and Modular Unlearning in Large Language Models", NeurIPS 2024; official code
OPTML-Group/WAGLE).

    score_j = |(θ_j − g_r,j / γ) · g_f,j|

with g_f = Σ_{x in forget} ∇R(x) and g_r = Σ_{x in retain} ∇R(x), R(x) the mean answer NLL of
one instance (``reduction="mean"`` divides each by its instance count, which is the same as
multiplying γ by the number of retain instances: γ must be chosen together with the
reduction). γ → ∞ drops the retain term and gives ``snip``. The default γ = 1e-6
(:data:`DEFAULT_GAMMA`) is the value in the official configs (its argparse default is 1e-3);
with summed gradients the retain term then dominates and the score is close to |g_r · g_f| / γ.
"""
from __future__ import annotations

import math

import torch

from geffect.attribution.registry import ScoringContext, register_scorer
from geffect.attribution.snip import snip_scores
from geffect.distributed import local, wrap_like

__all__ = ["DEFAULT_GAMMA", "wagle_scores"]

#: γ (``mu``) in the official WAGLE configs; the official argparse default is 1e-3.
DEFAULT_GAMMA = 1e-6


@register_scorer("wagle")
def wagle_scores(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """|(θ − g_r/γ) · g_f|, computed in place in the g_f and g_r accumulators (``math.inf``: ``snip``)."""
    if not ctx.gamma > 0:
        raise ValueError(f"gamma must be > 0 (got {ctx.gamma}); use math.inf for the SNIP limit")
    if math.isinf(ctx.gamma):
        return snip_scores(ctx)
    ctx.batches("forget")
    if ctx.retain_batches is None:
        raise ValueError(
            "method='wagle' needs retain_batches (the retain gradient g_r); "
            "pass retain data, or use method='snip' for the score without the retain term"
        )
    g_f = ctx.gradient("forget")
    g_r = ctx.gradient("retain")
    scores: dict[str, torch.Tensor] = {}
    for n, p in ctx.params.items():
        g, r = g_f.pop(n), g_r.pop(n)
        r.div_(-ctx.gamma).add_(local(p).detach())  # θ − g_r/γ, in the accumulator dtype
        scores[n] = wrap_like(g.mul_(r).abs_(), p)
        del r
    return scores
