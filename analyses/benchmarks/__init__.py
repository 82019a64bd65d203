"""Deprecated: the study benchmarks moved to :mod:`analyses.studies` (this alias goes in the next release).

``analyses.benchmarks`` and its modules (``base``, ``text``, ``tofu``, ``muse``, ``wmdp``) are the
same module objects as ``analyses.studies`` and its modules, so ``isinstance`` checks and
monkeypatching work through either name.
"""
import importlib
import sys
import warnings

warnings.warn("analyses.benchmarks was renamed analyses.studies; import from analyses.studies "
              "(the old name goes in the next release)", DeprecationWarning, stacklevel=2)

from analyses.studies import *  # noqa: E402,F401,F403
from analyses.studies import __all__  # noqa: E402,F401

for _name in ("base", "text", "tofu", "muse", "wmdp"):
    sys.modules[f"{__name__}.{_name}"] = globals()[_name] = importlib.import_module(f"analyses.studies.{_name}")
