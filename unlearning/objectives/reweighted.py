"""Token-reweighted gradient ascent: WGA, SimSat, SimImp, SatImp, TNPO, WTNPO.

All share L_f = −(1/|T|) Σ_T w_i ℓ_i with detached w (SatImp, Yang et al. ICML 2025, token-wise
reweighted forget loss; G-effect, Wang et al. ICLR 2025, §5 for WGA/TNPO/WTNPO). The weight
formulas live in :mod:`unlearning.objectives.weighting`:

* wga     w = p^β                                  (β = 5, G-effect release)
* simsat  w = p^β                                  (β = 1, SatImp SimSat)
* simimp  w = (1 − p)^β                            (β = 1, SatImp SimImp)
* satimp  w = p^β1 (1 − p)^β2                      (β1 = 5, β2 = 0.1, retain NLL 0.1; SatImp README)
* tnpo    w = 2 p^β / (p^β + p_ref^β + 1e-5)        (β = 4, G-effect)
* wtnpo   w = 2 p^(β+α) / (p^β + p_ref^β + 1e-5)    (β = 4, α = 1.5, G-effect)

The likelihood weights (wga/simsat/simimp/satimp) accept ``granularity`` (token / instance /
group / batch, see :func:`unlearning.objectives.weighting.apply_granularity`) and ``group_size``.
"""
from __future__ import annotations

import functools

from unlearning.objectives import weighting
from unlearning.objectives.base import TokenWeighted, register


class _LikelihoodWeighted(TokenWeighted):
    """Weights that depend on p only; granularity-aware."""

    def weight_fn(self):
        raise NotImplementedError  # pragma: no cover

    def validate(self) -> None:
        if self.hparams["granularity"] not in weighting.GRANULARITIES:
            raise ValueError(
                f"objective {self.name!r}: granularity must be one of {', '.join(weighting.GRANULARITIES)}, "
                f"got {self.hparams['granularity']!r}"
            )
        gs = self.hparams["group_size"]
        if isinstance(gs, bool) or not isinstance(gs, int) or gs < 1:
            raise ValueError(f"objective {self.name!r}: group_size must be a positive int, got {gs!r}")
        self.weight_fn()  # validates the betas

    def weights(self, logp, mask, ref_logp):
        return weighting.apply_granularity(
            self.weight_fn(), logp, mask, self.hparams["granularity"], self.hparams["group_size"]
        )


_GRAN = {"granularity": "token", "group_size": 4}


@register
class WGA(_LikelihoodWeighted):
    name = "wga"
    defaults = {"beta": 5.0, **_GRAN}

    def weight_fn(self):
        return functools.partial(weighting.wga, beta=self._num("beta", nonneg=True))


@register
class SimSat(_LikelihoodWeighted):
    name = "simsat"
    defaults = {"beta": 1.0, **_GRAN}

    def weight_fn(self):
        return functools.partial(weighting.saturation, beta=self._num("beta", nonneg=True))


@register
class SimImp(_LikelihoodWeighted):
    name = "simimp"
    defaults = {"beta": 1.0, **_GRAN}

    def weight_fn(self):
        return functools.partial(weighting.importance, beta=self._num("beta", nonneg=True))


@register
class SatImp(_LikelihoodWeighted):
    name = "satimp"
    defaults = {"beta1": 5.0, "beta2": 0.1, **_GRAN}
    retain_default = "nll"
    retain_weight_default = 0.1

    def weight_fn(self):
        return functools.partial(
            weighting.satimp, beta1=self._num("beta1", nonneg=True), beta2=self._num("beta2", nonneg=True)
        )


@register
class TNPO(TokenWeighted):
    name = "tnpo"
    requires_reference = True
    defaults = {"beta": 4.0}

    def validate(self) -> None:
        self._num("beta", nonneg=True)

    def weights(self, logp, mask, ref_logp):
        return weighting.tnpo(logp, ref_logp, mask, beta=self._num("beta"))


@register
class WTNPO(TokenWeighted):
    name = "wtnpo"
    requires_reference = True
    defaults = {"beta": 4.0, "alpha": 1.5}

    def validate(self) -> None:
        self._num("beta", nonneg=True)
        self._num("alpha", nonneg=True)

    def weights(self, logp, mask, ref_logp):
        return weighting.wtnpo(logp, ref_logp, mask, beta=self._num("beta"), alpha=self._num("alpha"))
