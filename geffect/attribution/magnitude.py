"""``magnitude``: |θ_j|, the weight's own size (a data-free baseline of WAGLE, Jia et al., NeurIPS 2024)."""
from __future__ import annotations

import torch

from geffect.attribution.registry import ScoringContext, register_scorer
from geffect.distributed import local, wrap_like
from geffect.losses import compute_dtype


@register_scorer("magnitude")
def magnitude_scores(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """|θ_j| in float32 (float64 for float64 parameters); needs no calibration data."""
    return {n: wrap_like(local(p).detach().abs().to(compute_dtype(p.dtype)), p) for n, p in ctx.params.items()}
