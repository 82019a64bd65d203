"""The rule registry: exact module type -> ghost inner-product rule (see :mod:`geffect.rules`).

Exact, not ``isinstance``: a subclass may change the forward (e.g. an embedding that scales its
output), so it falls back to the general rule unless registered itself. The one exception is
the class FSDP2 (``fully_shard``) and ``replicate`` swap in: ``FSDPEmbedding`` is
``(FSDPModule, Embedding)`` with Embedding's forward, so it gets Embedding's rule. Families of
classes that are copies of one another can be covered by a matcher (:func:`register_rule_matcher`)
that checks what the class computes.

Rule modules import :func:`register_rule` from here, not from the package, so that
``geffect.rules`` can import them without an import cycle.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["Rule", "batch_sum", "batch_tokens", "get_rule", "register_rule", "register_rule_matcher", "registered_types"]

Rule = Callable[[nn.Module, tuple, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]]

_RULES: dict[type, Rule] = {}
_MATCHERS: list[tuple[Callable[[type], bool], Rule]] = []
_MATCHED: dict[type, Rule | None] = {}  # module type -> the matcher's rule (or None), decided once per type


def register_rule(*module_types: type) -> Callable[[Rule], Rule]:
    """Decorator: register ``rule`` for each of ``module_types`` (exact type match)."""

    def wrap(rule: Rule) -> Rule:
        for t in module_types:
            _RULES[t] = rule
        _MATCHED.clear()
        return rule

    return wrap


def register_rule_matcher(matches: Callable[[type], bool], rule: Rule) -> Rule:
    """Use ``rule`` for every module type ``matches(type)`` accepts and no exact rule covers.

    For families of classes that are copies of one another (Hugging Face defines one RMSNorm
    class per model family, most with Llama's forward): the matcher must check that the forward
    really computes what the rule assumes. Decided once per type.
    """
    _MATCHERS.append((matches, rule))
    _MATCHED.clear()
    return rule


def _unwrapped_type(module: nn.Module) -> type:
    """``type(module)`` without the wrapper classes torch.distributed puts first in its MRO."""
    t = type(module)
    while len(t.__bases__) == 2 and t.__bases__[0].__module__.startswith("torch.distributed."):
        t = t.__bases__[1]  # FSDP<cls> = (FSDPModule, cls); Replicate<cls> likewise
    return t


def get_rule(module: nn.Module) -> Rule | None:
    """The rule for the module's type (FSDP2's wrapper class unwrapped): an exact registration,
    else the first matcher that accepts the type, else None (use the fallback)."""
    t = _unwrapped_type(module)
    rule = _RULES.get(t)
    if rule is None:
        if t not in _MATCHED:
            _MATCHED[t] = next((r for matches, r in _MATCHERS if matches(t)), None)
        rule = _MATCHED[t]
    return rule


def registered_types() -> list[type]:
    """The module types that have a rule (registration order)."""
    return list(_RULES)


def batch_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum every dimension except the first: (B, ...) -> (B,) (also for an empty batch)."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).sum(dim=1)  # (B,)


def batch_tokens(x: torch.Tensor, d: int | None = None) -> torch.Tensor:
    """(B, ..., d) -> (B, T, d) with T the product of the middle dimensions (T = 1 for (B, d));
    without ``d``, (B, ...) -> (B, T). Unlike ``reshape(B, -1, d)`` also defined for B = 0."""
    if d is None:
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # (B, T)
    return x.reshape(x.shape[0], math.prod(x.shape[1:-1]), d)  # (B, T, d)
