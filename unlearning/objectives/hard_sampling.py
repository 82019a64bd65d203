"""Hard-sampling gradient ascent: topk / bottomk / random (SatImp, Alg. 1, made symmetric).

L_f = −(1/|T|) Σ_T w_i ℓ_i with w ∈ {0, 1} from :func:`unlearning.objectives.weighting.hard_sampling`:
each sequence keeps exactly k_i = min(n_i, max(1, ⌊fraction·n_i + 0.5⌋)) of its n_i answer
tokens — the highest-loss (topk), lowest-loss (bottomk) or random ones. |T| counts *all* valid
answer tokens of the micro-batch (not only the kept ones), so the loss scale shrinks with the
fraction exactly as the token-wise reduction prescribes; the official code sums instead.
``random`` draws from a generator seeded once with ``seed`` and advanced on every call.
"""
from __future__ import annotations

import torch

from unlearning.objectives import weighting
from unlearning.objectives.base import TokenWeighted, register


class _HardSampling(TokenWeighted):
    mode = "topk"
    defaults = {"fraction": 0.5, "seed": 0}

    def validate(self) -> None:
        f = self.hparams["fraction"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (0 < f <= 1):
            raise ValueError(f"objective {self.name!r}: fraction must be in (0, 1], got {f!r}")
        self._generator = torch.Generator().manual_seed(int(self.hparams["seed"]))

    def weights(self, logp, mask, ref_logp):
        return weighting.hard_sampling(-logp, mask, self.hparams["fraction"], self.mode, self._generator)


@register
class TopK(_HardSampling):
    name = "topk"
    mode = "topk"


@register
class BottomK(_HardSampling):
    name = "bottomk"
    mode = "bottomk"


@register
class Random(_HardSampling):
    name = "random"
    mode = "random"
