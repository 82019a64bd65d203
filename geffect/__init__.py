"""geffect: gradient effects (G-effects) and weight attribution for LLM unlearning.

Depends only on torch (and transformers models duck-typed); never imports ``unlearning``.
"""
from geffect.attribution import attribute_weights
from geffect.effect import GEffectResult, flat_gradient, gradient_effect, instance_effect
from geffect.engine import model_logits, per_instance_dots
from geffect.groups import aggregate, coarse_groups, parameter_groups
from geffect.losses import answer_logprob, answer_mask, answer_nll, token_logprobs
from geffect.masking import (apply_mask_to_gradients, load_mask, mask_overlap, mask_summary, masked_direction,
                             masked_geffect, save_mask, weight_mask)
from geffect.tracker import GEffectRecord, GEffectTracker

__all__ = [
    "GEffectRecord",
    "GEffectResult",
    "GEffectTracker",
    "aggregate",
    "answer_logprob",
    "answer_mask",
    "answer_nll",
    "coarse_groups",
    "flat_gradient",
    "gradient_effect",
    "instance_effect",
    "model_logits",
    "parameter_groups",
    "per_instance_dots",
    "token_logprobs",
    # weight attribution (WAGLE), issue 6
    "apply_mask_to_gradients",
    "attribute_weights",
    "load_mask",
    "mask_overlap",
    "mask_summary",
    "masked_direction",
    "masked_geffect",
    "save_mask",
    "weight_mask",
]
