"""What G-effect tracking computes and how: :class:`GEffectConfig`, one object from the command line to the tracker.

A training run decides once which steps are tracked, on which probe rows, per which parameter
groups, with which engine, and what else is recorded (PG-effects, the objective's weights on the
probe, the micro-batches a replay needs). The same object goes whole from the run's arguments
(``unlearning.training.UnlearningArguments.geffect_config``) through the Trainer callback to
:class:`geffect.GEffectTracker`; it is validated here, once.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from geffect.engine import ENGINES
from geffect.groups import module_groups, parameter_groups

__all__ = ["COARSE_SCHEMES", "GEffectConfig", "GROUP_SCHEMES", "PG_INSTANCES"]

#: named parameter-group schemes: fine layers (embed, layer.i, final_norm, lm_head) or modules
#: (every layer split into layer.i.attn / .mlp / .norm; sums give the layers)
GROUP_SCHEMES = ("layers", "modules")
#: coarse views computed beside the fine groups (:func:`geffect.coarse_groups`)
COARSE_SCHEMES = ("thirds", "attn_mlp")
#: whose PG-effects are recorded: the forget instances of each tracked step, or the fixed forget probe
PG_INSTANCES = ("batch", "probe")


@dataclass(frozen=True)
class GEffectConfig:
    """Settings of G-effect tracking (Wang et al., ICLR 2025; docs/geffect.md).

    Args:
        every: track optimizer steps 1, 1 + every, 1 + 2·every, ...
        probe_size: rows per probe set (the first N of the forget and of the retain split).
        groups: parameter groups: ``"layers"`` (:func:`geffect.parameter_groups`),
            ``"modules"`` (:func:`geffect.module_groups`) or an explicit mapping group -> names.
        coarse: a coarse view computed in the same pass (``"thirds"``, ``"attn_mlp"`` or None).
        engine: the per-instance inner-product engine (``"ghost"``, ``"loop"``, ``"func"``).
        pg_effect: PG-effects (Eq. 5): False, ``"batch"`` (True: the unlearning instances of
            each tracked step) or ``"probe"`` (the fixed forget-probe instances).
        probe_weights: record the objective's token and instance weights on the forget probe.
        rows_per_pass: at most this many probe rows per tracking forward and backward (None:
            all of a process's rows at once); the values do not change.
        record_batches: store each tracked step's micro-batches and the probe sets for a replay.
    """

    every: int = 1
    probe_size: int = 16
    groups: str | Mapping[str, Sequence[str]] = "layers"
    coarse: str | None = "thirds"
    engine: str = "ghost"
    pg_effect: bool | str = False
    probe_weights: bool = False
    rows_per_pass: int | None = None
    record_batches: bool = False

    def __post_init__(self) -> None:
        if self.pg_effect is True:
            object.__setattr__(self, "pg_effect", "batch")
        elif self.pg_effect is None:
            object.__setattr__(self, "pg_effect", False)
        if self.groups is None:
            object.__setattr__(self, "groups", "layers")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.probe_size < 1:
            raise ValueError(f"probe_size must be >= 1, got {self.probe_size}")
        if self.rows_per_pass is not None and self.rows_per_pass < 1:
            raise ValueError(f"rows_per_pass must be None (all rows in one pass) or >= 1, got {self.rows_per_pass}")
        if isinstance(self.groups, str) and self.groups not in GROUP_SCHEMES:
            raise ValueError(f"groups must be 'layers' or 'modules' (or a mapping group -> parameter names), "
                             f"got {self.groups!r}")
        if not isinstance(self.groups, (str, Mapping)):
            raise ValueError(f"groups must be 'layers', 'modules' or a mapping group -> parameter names, "
                             f"got {type(self.groups).__name__}")
        if self.coarse is not None and self.coarse not in COARSE_SCHEMES:
            raise ValueError(f"coarse must be one of {COARSE_SCHEMES} or None, got {self.coarse!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}; use one of {ENGINES}")
        if self.pg_effect not in (False, *PG_INSTANCES):
            raise ValueError(f"pg_effect must be False, 'batch' or 'probe', got {self.pg_effect!r}")

    @classmethod
    def resolve(cls, config: GEffectConfig | None = None, **settings: Any) -> GEffectConfig:
        """``config`` with keyword ``settings`` (fields of this class) applied, or a new one from them."""
        if config is None:
            return cls(**settings)
        return dataclasses.replace(config, **settings) if settings else config

    def replace(self, **changes: Any) -> GEffectConfig:
        return dataclasses.replace(self, **changes)

    @property
    def explicit_groups(self) -> OrderedDict[str, list[str]] | None:
        """The groups when given as a mapping (None for a named scheme, resolved on the model)."""
        return None if isinstance(self.groups, str) else OrderedDict(self.groups)

    def model_groups(self, model: nn.Module) -> OrderedDict[str, list[str]]:
        """The parameter groups of ``model`` under this configuration."""
        if not isinstance(self.groups, str):
            return self.explicit_groups
        return module_groups(model) if self.groups == "modules" else parameter_groups(model)

    def should_track(self, step: int) -> bool:
        """Whether optimizer step ``step`` (1 = the first update) is tracked."""
        return (step - 1) % self.every == 0
