"""geffect: gradient effects (G-effects) and weight attribution for LLM unlearning.

Works on any torch model (Hugging Face causal LMs duck-typed); needs torch, safetensors (mask
files), tqdm (progress bars) and pandas (tidy tables, imported on use). Never imports
``unlearning`` or ``analyses``.
"""
from geffect.attribution import attribute_and_save, attribute_weights
from geffect.effect import GEffectResult, flat_gradient, gradient_effect, instance_effect
from geffect.engine import model_logits, per_instance_dots
from geffect.groups import (LAYER_BUCKETS, MODULE_SUBTYPES, MODULE_TYPES, aggregate, coarse_groups, layer_bucket,
                            layer_buckets, layer_index, layer_of, module_groups, module_subtype, module_type,
                            parameter_groups)
from geffect.losses import IGNORE_INDEX, answer_logprob, answer_mask, answer_nll, compute_dtype, token_logprobs
from geffect.masking import (apply_mask_to_gradients, load_mask, mask_overlap, mask_summary, masked_direction,
                             masked_geffect, save_mask, weight_mask)
from geffect.tracker import GEffectConfig, GEffectRecord, GEffectTracker

__all__ = [
    "GEffectConfig",
    "GEffectRecord",
    "GEffectResult",
    "GEffectTracker",
    "IGNORE_INDEX",
    "LAYER_BUCKETS",
    "MODULE_SUBTYPES",
    "MODULE_TYPES",
    "aggregate",
    "answer_logprob",
    "answer_mask",
    "answer_nll",
    "coarse_groups",
    "compute_dtype",
    "flat_gradient",
    "gradient_effect",
    "instance_effect",
    "layer_bucket",
    "layer_buckets",
    "layer_index",
    "model_logits",
    "module_subtype",
    "module_type",
    "module_groups",
    "layer_of",
    "parameter_groups",
    "per_instance_dots",
    "token_logprobs",
    # weight attribution and masks (WAGLE, Jia et al., NeurIPS 2024)
    "apply_mask_to_gradients",
    "attribute_and_save",
    "attribute_weights",
    "load_mask",
    "mask_overlap",
    "mask_summary",
    "masked_direction",
    "masked_geffect",
    "save_mask",
    "weight_mask",
]
