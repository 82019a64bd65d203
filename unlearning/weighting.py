"""Deprecated path: the token-weight functions moved to :mod:`unlearning.objectives.weighting`.

Kept for one release; importing this module emits a ``DeprecationWarning``.
"""
import warnings

from unlearning.objectives.weighting import *  # noqa: F401,F403
from unlearning.objectives.weighting import __all__  # noqa: F401

warnings.warn("unlearning.weighting moved to unlearning.objectives.weighting; import it from there "
              "(the old path goes in the next release)", DeprecationWarning, stacklevel=2)
