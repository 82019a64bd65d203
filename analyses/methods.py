"""The study's methods: a name -> the registered objective it trains with, extra hyper-parameters, a mask.

Any registered objective (``unlearning.objectives.available()``) is a method of its own name;
on top of those the study defines ``wagle_gd`` / ``random_gd`` (GD restricted to the WAGLE /
a random weight mask of the same density, Jia et al., NeurIPS 2024) and SatImp's granularity
ablation ``satimp_instance`` / ``satimp_group`` / ``satimp_batch`` (Yang et al., ICML 2025). A
benchmark may add its own (WMDP: ``rmu`` with the official WMDP preset)::

    from analyses.methods import method_spec
    method_spec("wagle_gd")          # MethodSpec(objective='gd', hparams={}, mask='wagle')
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from analyses.config import DEFAULT_METHODS
from unlearning import objectives

__all__ = ["ABLATION", "METHODS", "MethodSpec", "method_spec"]


@dataclass(frozen=True)
class MethodSpec:
    """A study method: the registered objective it trains with, extra hparams and an optional mask."""

    objective: str
    hparams: dict = field(default_factory=dict)
    mask: str | None = None  # name of a study mask ("wagle") whose gradient mask is applied


METHODS = {name: MethodSpec(name) for name in DEFAULT_METHODS if not name.endswith("_gd") or name == "gd"}
METHODS["wagle_gd"] = MethodSpec("gd", mask="wagle")
METHODS["random_gd"] = MethodSpec("gd", mask="random")  # WAGLE's random-mask baseline at the same density
#: SatImp's granularity ablation (``--full``): the same weight at instance / group / batch granularity
ABLATION = {f"satimp_{g}": MethodSpec("satimp", {"granularity": g}) for g in ("instance", "group", "batch")}
METHODS.update(ABLATION)


def method_spec(name: str, extra: Mapping[str, MethodSpec] | None = None) -> MethodSpec:
    """The spec of a study method (``extra``: a benchmark's own methods, which take precedence);
    any registered objective name is accepted as itself."""
    if extra and name in extra:
        return extra[name]
    if name in METHODS:
        return METHODS[name]
    if name in objectives.available():
        return MethodSpec(name)
    raise ValueError(f"unknown method {name!r}; use one of {sorted(set(METHODS) | set(extra or ()) | set(objectives.available()))} "
                     "(wagle_gd = GD restricted to the WAGLE weight mask)")
