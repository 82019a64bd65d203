"""Deprecated path: :class:`UnlearningTrainer` lives in :mod:`unlearning.training` (:mod:`unlearning.training.trainer`).

Kept for one release; importing this module emits a ``DeprecationWarning``.
"""
import warnings

from unlearning.training.trainer import StepRecord, UnlearningTrainer  # noqa: F401

__all__ = ["StepRecord", "UnlearningTrainer"]

warnings.warn("unlearning.trainer moved to unlearning.training (UnlearningTrainer); import it from there "
              "(the old path goes in the next release)", DeprecationWarning, stacklevel=2)
