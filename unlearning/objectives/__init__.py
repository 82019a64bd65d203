"""Unlearning objectives: one registry, name -> :class:`Objective` (docs/objectives.md).

>>> from unlearning import objectives
>>> obj = objectives.get("satimp", beta1=5, beta2=0.1)
>>> out = obj(model, {"forget": fb, "retain": rb})        # doctest: +SKIP
>>> out.loss.backward()                                     # doctest: +SKIP

Names: ga, gd, npo, simnpo, wga, tnpo, wtnpo, simsat, simimp, satimp, topk, bottomk, random,
idk, dpo, rmu. Every objective accepts ``retain_loss`` (none/nll/kl), ``retain_weight``,
``forget_weight`` and ``kl_tokens`` plus its own keywords (``Objective.defaults``).
"""
from unlearning.objectives.base import (
    ForgetTerm,
    Objective,
    ObjectiveOutput,
    TokenWeighted,
    available,
    default_hparams,
    get,
    needs_refusal,
    refusal_objectives,
    register,
)

# importing the method modules registers them
from unlearning.objectives import ga, hard_sampling, npo, preference, reweighted, rmu  # noqa: E402,F401

__all__ = [
    "ForgetTerm",
    "Objective",
    "ObjectiveOutput",
    "TokenWeighted",
    "available",
    "default_hparams",
    "get",
    "needs_refusal",
    "refusal_objectives",
    "register",
]
