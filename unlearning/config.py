"""Deprecated path: :class:`UnlearningArguments` lives in :mod:`unlearning.training` (:mod:`unlearning.training.config`).

Kept for one release; importing this module emits a ``DeprecationWarning``.
"""
import warnings

from unlearning.training.config import (DEFAULT_LR_PRETRAINED, DEFAULT_LR_TINY, OBJECTIVE_HPARAMS,  # noqa: F401
                                        UnlearningArguments)

__all__ = ["DEFAULT_LR_PRETRAINED", "DEFAULT_LR_TINY", "OBJECTIVE_HPARAMS", "UnlearningArguments"]

warnings.warn("unlearning.config moved to unlearning.training (UnlearningArguments); import it from there "
              "(the old path goes in the next release)", DeprecationWarning, stacklevel=2)
