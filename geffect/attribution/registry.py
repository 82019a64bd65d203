"""The scorer registry: attribution method name -> scorer (see :mod:`geffect.attribution`).

A scorer is a function ``score(ctx: ScoringContext) -> {parameter name: score tensor}`` (the
parameter's shape; "higher = more worth updating"), registered under its method name with
:func:`register_scorer`. :func:`geffect.attribution.attribute_weights` looks the method up
here, selects the parameters and hands the scorer one :class:`ScoringContext`; the context's
:meth:`~ScoringContext.gradient` gives the summed (or averaged) calibration gradients g_f and
g_r, so a new gradient-based score is a few lines::

    from geffect.attribution import register_scorer
    from geffect.distributed import local, wrap_like

    @register_scorer("grad_x_weight_signed")
    def signed(ctx):
        g_f = ctx.gradient("forget")
        return {n: wrap_like(g_f.pop(n).mul_(local(p).detach()), p) for n, p in ctx.params.items()}

For FSDP2 models (DTensor parameters) a scorer computes on this rank's rows
(:func:`geffect.distributed.local`) and returns DTensors laid out like the parameters
(:func:`geffect.distributed.wrap_like`); the gradients of the context are already this rank's
rows of the sums over all ranks.

Scorer modules import :func:`register_scorer` from here, not from the package, so that
``geffect.attribution`` can import them without an import cycle.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from geffect.attribution.calibration import Batch, accumulate_gradients
from geffect.masking.selection import SCOPES

__all__ = ["REDUCTIONS", "Scorer", "ScoringContext", "get_scorer", "register_scorer", "scorer_names", "scorer_scope"]

REDUCTIONS = ("sum", "mean")


@dataclass
class ScoringContext:
    """What a scorer gets: the model, the parameters to score, the calibration data and the settings.

    ``params``: ``{name: parameter}`` to score (tied parameters once). ``forget_batches`` /
    ``retain_batches``: iterables of batches (``input_ids``, ``attention_mask``, ``labels``),
    consumed once, or None. ``gamma`` (WAGLE's γ), ``reduction`` (``"sum"`` or ``"mean"``),
    ``seed`` and ``progress`` as given to :func:`geffect.attribution.attribute_weights`.
    """

    model: nn.Module
    params: dict[str, nn.Parameter]
    forget_batches: Iterable[Batch] | None
    retain_batches: Iterable[Batch] | None
    method: str
    gamma: float
    reduction: str = "sum"
    seed: int = 0
    progress: bool = False

    def batches(self, which: str) -> Iterable[Batch]:
        """The ``"forget"`` or ``"retain"`` batches; ``ValueError`` naming the method when they are missing."""
        batches = self.forget_batches if which == "forget" else self.retain_batches
        if batches is None:
            raise ValueError(f"method={self.method!r} needs {which}_batches (the calibration data)")
        return batches

    def gradient(self, which: str) -> dict[str, torch.Tensor]:
        """g_f (``which="forget"``) or g_r (``"retain"``): Σ_x ∇R(x) over the instances of those
        batches (:func:`geffect.attribution.calibration.accumulate_gradients`), divided by their
        number under ``reduction="mean"``.

        Fresh float32 accumulators (float64 for float64 parameters) the scorer may overwrite in
        place; for a sharded parameter, this rank's rows of the sum over all ranks.
        """
        grads, count = accumulate_gradients(self.model, self.params, self.batches(which), progress=self.progress,
                                            desc=which)
        if count == 0:
            raise ValueError(f"{which}_batches is empty: method={self.method!r} needs at least one {which} instance")
        if self.reduction == "mean":
            for g in grads.values():
                g.div_(count)
        return grads


Scorer = Callable[[ScoringContext], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class _Entry:
    score: Scorer
    scope: str


_SCORERS: dict[str, _Entry] = {}


def register_scorer(name: str, *, scope: str = "global") -> Callable[[Scorer], Scorer]:
    """Decorator: make ``score(ctx) -> {name: tensor}`` the attribution method ``name``.

    ``scope`` is the ranking scope :func:`geffect.attribution.attribute_and_save` uses by
    default for the method (:data:`geffect.masking.SCOPES`; Wanda ranks per output row).
    Registering a name again replaces the earlier scorer.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")

    def wrap(score: Scorer) -> Scorer:
        _SCORERS[name] = _Entry(score, scope)
        return score

    return wrap


def get_scorer(name: str) -> Scorer:
    """The scorer registered as ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _SCORERS[name].score
    except KeyError:
        raise ValueError(f"unknown attribution method {name!r}; choose one of {scorer_names()} "
                         "(or register one with geffect.attribution.register_scorer)") from None


def scorer_scope(name: str) -> str:
    """The default ranking scope of method ``name`` (see :func:`register_scorer`)."""
    get_scorer(name)
    return _SCORERS[name].scope


def scorer_names() -> tuple[str, ...]:
    """Every registered method name, in registration order."""
    return tuple(_SCORERS)
