"""Deprecated path: :class:`GEffectCallback` and :class:`WeightMaskCallback` live in :mod:`unlearning.callbacks`.

Kept for one release; importing this module emits a ``DeprecationWarning``. (The shared step
state ``StepGradients`` / ``step_gradients`` is gone: each callback keeps its own state.)
"""
import warnings

from geffect.batches import concat_batches  # noqa: F401
from unlearning.callbacks import GEffectCallback, WeightMaskCallback  # noqa: F401
from unlearning.runs.folder import ANALYSIS_DIR, PROBE_INSTANCE_WEIGHTS, PROBE_TOKEN_WEIGHTS  # noqa: F401

__all__ = ["ANALYSIS_DIR", "GEffectCallback", "PROBE_INSTANCE_WEIGHTS", "PROBE_TOKEN_WEIGHTS", "WeightMaskCallback",
           "concat_batches"]

warnings.warn("unlearning.gradient_hooks moved to unlearning.callbacks (GEffectCallback, WeightMaskCallback); import "
              "them from there (the old path goes in the next release)", DeprecationWarning, stacklevel=2)
