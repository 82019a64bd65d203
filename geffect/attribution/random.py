"""``random``: U(0, 1) scores, seeded and deterministic (the chance baseline of WAGLE, Jia et al., NeurIPS 2024)."""
from __future__ import annotations

import torch

from geffect.attribution.registry import ScoringContext, register_scorer
from geffect.distributed import local, local_rows, wrap_like


@register_scorer("random")
def random_scores(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """float32 U(0, 1) draws from ``torch.Generator().manual_seed(ctx.seed)``; needs no data.

    Drawn on CPU in parameter order, full-shaped, so the scores do not depend on the device or
    on the sharding (a sharded parameter keeps its own rows of the full draw).
    """
    gen = torch.Generator().manual_seed(ctx.seed)
    return {n: wrap_like(local_rows(torch.rand(p.shape, generator=gen), p).to(local(p).device), p)
            for n, p in ctx.params.items()}
