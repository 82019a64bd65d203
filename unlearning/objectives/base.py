"""Objective base class, output record and registry.

An objective is a callable ``(model, inputs, ref_model=None) -> ObjectiveOutput`` where
``inputs = {"forget": batch, "retain": batch (optional), "idk": batch (optional)}`` and a batch
follows :mod:`geffect.losses` (``input_ids``, ``attention_mask``, ``labels`` (B, T); extra keys
such as ``index`` are ignored). Model calls live in :mod:`unlearning.objectives.forward`, retain
terms in :mod:`unlearning.objectives.retain`.

Total loss:  loss = forget_weight · L_f + retain_weight · L_r, minimised (the composition of a
forget and a retain term of GradDiff, Maini et al. 2024 (TOFU), and of Wang et al., ICLR 2025).
Each forget term is written so that *minimising* it forgets; see docs/objectives.md.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from unlearning.objectives.forward import batch_logprobs, count_answer_tokens, reference_logprobs
from unlearning.objectives.retain import RETAIN_LOSSES, retain_term

logger = logging.getLogger(__name__)

COMMON_HPARAMS = {"retain_loss", "retain_weight", "forget_weight", "kl_tokens"}


@dataclass
class ObjectiveOutput:
    """What one objective call returns (docs/contracts.md)."""

    loss: torch.Tensor  # () total = forget_weight * L_f + retain_weight * L_r
    forget_loss: torch.Tensor | None = None  # () L_f
    retain_loss: torch.Tensor | None = None  # () L_r (None when retain_loss == "none")
    token_weights: torch.Tensor | None = None  # (B, T) forget, detached, zero off answer tokens
    instance_weights: torch.Tensor | None = None  # (B,) detached
    token_logprobs: torch.Tensor | None = None  # (B, T) forget log p, detached
    answer_mask: torch.Tensor | None = None  # (B, T) bool


@dataclass
class ForgetTerm:
    """The forget part computed by a subclass (loss carries the graph, the rest is detached)."""

    loss: torch.Tensor
    token_weights: torch.Tensor | None = None
    instance_weights: torch.Tensor | None = None
    token_logprobs: torch.Tensor | None = None
    answer_mask: torch.Tensor | None = None


# --------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: add an :class:`Objective` subclass under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY:
        raise ValueError(f"objective {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Sorted registered objective names."""
    return sorted(_REGISTRY)


def default_hparams(name: str) -> dict[str, Any]:
    """Every keyword ``get(name, ...)`` accepts, with its default value."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; valid names: {', '.join(available())}")
    return dict(_REGISTRY[name]().hparams)


def refusal_objectives() -> tuple[str, ...]:
    """Names of the registered objectives that train on refusal answers (``needs_refusal``)."""
    return tuple(name for name in available() if _REGISTRY[name].needs_refusal)


def needs_refusal(objective: Any) -> bool:
    """Whether ``objective`` (an objective object or a registered name) trains on refusal answers.

    Objects outside the registry say so with a ``needs_refusal`` attribute; without one, an
    object whose ``name`` is a registered refusal objective needs them.
    """
    if isinstance(objective, str):
        if objective not in _REGISTRY:
            raise ValueError(f"unknown objective {objective!r}; valid names: {', '.join(available())}")
        return _REGISTRY[objective].needs_refusal
    flag = getattr(objective, "needs_refusal", None)
    if flag is not None:
        return bool(flag)
    name = getattr(objective, "name", None)
    return name in _REGISTRY and _REGISTRY[name].needs_refusal


def get(name: str, **hparams: Any) -> Objective:
    """Build the objective ``name`` with hyperparameters (unknown name/keyword -> ValueError)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; valid names: {', '.join(available())}")
    return _REGISTRY[name](**hparams)


# --------------------------------------------------------------------------- base class
class Objective:
    """Base class: subclasses set ``name``, ``defaults`` (method-specific hyperparameters and
    their default values), optionally ``retain_default`` / ``retain_weight_default`` /
    ``requires_reference``, and implement :meth:`forget_term`."""

    name: ClassVar[str] = ""
    requires_reference: ClassVar[bool] = False  # the forget term itself needs a reference model
    #: the forget term trains on refusal answers to the forget questions (``inputs["idk"]``)
    needs_refusal: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}
    retain_default: ClassVar[str] = "none"
    retain_weight_default: ClassVar[float] = 1.0
    retain_options: ClassVar[tuple[str, ...]] = RETAIN_LOSSES

    def __init__(self, **hparams: Any):
        accepted = set(self.defaults) | COMMON_HPARAMS
        unknown = sorted(set(hparams) - accepted)
        if unknown:
            raise ValueError(
                f"objective {self.name!r} got unknown hyperparameter(s) {unknown}; "
                f"accepted keywords: {', '.join(sorted(accepted))}"
            )
        hp: dict[str, Any] = {
            "retain_loss": self.retain_default,
            "retain_weight": self.retain_weight_default,
            "forget_weight": 1.0,
            "kl_tokens": "answer",
            **self.defaults,
        }
        hp.update(hparams)
        if hp["retain_loss"] not in self.retain_options:
            raise ValueError(
                f"objective {self.name!r}: retain_loss must be one of {', '.join(self.retain_options)}, "
                f"got {hp['retain_loss']!r}"
            )
        if hp["kl_tokens"] not in ("answer", "all"):
            raise ValueError(f"kl_tokens must be 'answer' or 'all', got {hp['kl_tokens']!r}")
        for k in ("retain_weight", "forget_weight"):
            v = hp[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"objective {self.name!r}: {k} must be a number, got {v!r}")
        self.hparams = hp
        self.validate()
        logger.debug("built objective %r (needs_reference=%s)", self, self.needs_reference)

    # subclasses may override
    def validate(self) -> None:
        """Check method-specific hyperparameters (raise ValueError)."""

    def forget_term(self, model, inputs: dict, ref_model) -> ForgetTerm:  # pragma: no cover
        raise NotImplementedError

    def retain_term(self, model, inputs: dict, ref_model) -> torch.Tensor | None:
        return retain_term(self.hparams["retain_loss"], model, inputs, ref_model, kl_tokens=self.hparams["kl_tokens"])

    # helpers
    def _num(self, key: str, *, positive: bool = False, nonneg: bool = False) -> float:
        v = self.hparams[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise ValueError(f"objective {self.name!r}: {key} must be a number, got {v!r}")
        if positive and not v > 0:
            raise ValueError(f"objective {self.name!r}: {key} must be > 0, got {v!r}")
        if nonneg and not v >= 0:
            raise ValueError(f"objective {self.name!r}: {key} must be >= 0, got {v!r}")
        return float(v)

    @property
    def needs_reference(self) -> bool:
        return bool(self.requires_reference or self.hparams["retain_loss"] == "kl")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.hparams.items()))
        return f"{type(self).__name__}({args})"

    def __call__(self, model, inputs: dict, ref_model=None) -> ObjectiveOutput:
        if "forget" not in inputs:
            raise ValueError(f"objective {self.name!r} needs inputs['forget'] (got keys {sorted(inputs)})")
        if self.needs_reference and ref_model is None:
            raise ValueError(
                f"objective {self.name!r} (retain_loss={self.hparams['retain_loss']!r}) needs a reference "
                "model: pass ref_model= (a frozen copy of the model before unlearning)"
            )
        ft = self.forget_term(model, inputs, ref_model)
        lr = self.retain_term(model, inputs, ref_model)
        loss = self.hparams["forget_weight"] * ft.loss
        if lr is not None:
            loss = loss + self.hparams["retain_weight"] * lr
        if not bool(torch.isfinite(loss.detach()).all()):
            f = inputs["forget"]
            idx = f.get("index")
            idx = idx.tolist() if torch.is_tensor(idx) else idx
            raise FloatingPointError(
                f"objective {self.name!r} produced a non-finite loss {float(loss.detach())} "
                f"(forget term {float(ft.loss.detach())}, retain term "
                f"{None if lr is None else float(lr.detach())}) on forget batch of shape "
                f"{tuple(f['input_ids'].shape)} with index {idx}; hparams {self.hparams}. "
                "Check the model dtype (bf16 overflow), the learning rate, and the reference model."
            )
        return ObjectiveOutput(
            loss=loss,
            forget_loss=ft.loss,
            retain_loss=lr,
            token_weights=ft.token_weights,
            instance_weights=ft.instance_weights,
            token_logprobs=ft.token_logprobs,
            answer_mask=ft.answer_mask,
        )


# --------------------------------------------------------------------------- token-weighted forget terms
def weighted_forget_loss(logp: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """L_f = −(1/|T|) Σ_T w ℓ = (1/|T|) Σ_T w · log p over the micro-batch's answer tokens T.

    ``weights`` are detached here (stop-gradient), so d L_f = (1/|T|) Σ w · d log p.
    """
    n = count_answer_tokens(mask, "forget")
    w = weights.detach().to(logp.dtype)
    return (w * logp * mask).sum() / n


class TokenWeighted(Objective):
    """Forget term L_f = −(1/|T|) Σ_T w_i ℓ_i with detached token weights from :meth:`weights`."""

    def weights(self, logp: torch.Tensor, mask: torch.Tensor, ref_logp: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def forget_term(self, model, inputs: dict, ref_model) -> ForgetTerm:
        batch = inputs["forget"]
        logp, mask = batch_logprobs(model, batch)  # (B, T) with graph, (B, T) bool
        ref_logp = reference_logprobs(ref_model, batch) if self.requires_reference else None
        w = self.weights(logp.detach(), mask, ref_logp).detach()  # (B, T)
        return ForgetTerm(
            loss=weighted_forget_loss(logp, mask, w),
            token_weights=w,
            token_logprobs=logp.detach(),
            answer_mask=mask,
        )
