"""Ghost inner-product rules, one small file per layer type (Opacus ``grad_sample`` layout).

A rule computes, for one call of one module, the per-instance inner products

    e[i, p] = < grad_p f_i , D_p >      for each parameter p the module owns directly,

from the module's captured inputs and the gradient ``backprops`` (delta) of ``sum_i f_i``
with respect to the module's output, without building per-sample weight gradients
(Wang et al., ICLR 2025, Definition 1 evaluated per instance; the identity is the one
Opacus' ghost clipping uses for norms).

Signature of a rule::

    rule(layer, inputs: tuple, backprops: Tensor (B, ..., d_out), directions: dict[str, Tensor])
        -> dict[str, Tensor (B,)]

``directions`` maps the layer's *local* parameter names (``"weight"``, ``"bias"``) to the
direction already cast to the compute dtype (float32, or float64 for float64 models); only
names with a direction are present. ``backprops`` is in the compute dtype too. Rules are
registered for an **exact** module type with :func:`register_rule` (a subclass may override
``forward`` with a different meaning of its inputs, so it is not matched implicitly), or for
every type a matcher accepts with :func:`register_rule_matcher` (Hugging Face's Llama-style
RMSNorm copies, recognised by their ``forward``); modules with no rule use
:mod:`geffect.rules.fallback`.
"""
from __future__ import annotations

# Importing the rule modules runs their registration decorators.
from geffect.rules import conv1d, embedding, linear, norm  # noqa: F401
from geffect.rules.fallback import fallback_tangents
from geffect.rules.registry import (Rule, batch_sum, batch_tokens, get_rule, register_rule, register_rule_matcher,
                                    registered_types)

__all__ = ["Rule", "batch_sum", "batch_tokens", "fallback_tangents", "get_rule", "register_rule", "register_rule_matcher",
           "registered_types"]
