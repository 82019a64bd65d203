"""The study's sanity gate: did the target memorise the forget set, and the retain model not?

Every unlearning finding presumes a subject that knows what it is asked to forget. Before
analysing, the study compares the evaluation summaries of the target and retain models on
the forget set:

- the target's forget extraction strength (ES) is at least ``min_es``;
- it exceeds the retain model's forget ES by at least ``es_gap`` (the target memorised rows
  the retain model never saw, rather than answering from general patterns);
- the target's forget probability is at least ``prob_ratio`` times the retain model's.

Without a retain model only the first check can be made (the report says so). When the gate
fails, the report says so at the top in plain words, the findings that presume memorisation
are skipped, and ``python -m analyses.geffect_tofu`` exits non-zero unless
``--allow-failed-gate`` is given.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

__all__ = ["Gate", "check_subject"]


@dataclass
class Gate:
    """The gate's verdict: ``passed``, one line per check, and the numbers behind them."""

    passed: bool
    checks: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        head = ("Sanity gate passed: the target memorised the forget set and the retain model did not."
                if self.passed else
                "Sanity gate FAILED: the target model did not memorise the forget set well enough (or the retain "
                "model knows it too), so unlearning has nothing to remove and the findings that presume "
                "memorisation are not reported.")
        return head + " " + " ".join(self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text()}


def _get(summary: Mapping[str, Any] | None, key: str) -> float:
    value = (summary or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def check_subject(target: Mapping[str, Any], retain: Mapping[str, Any] | None, *, min_es: float = 0.5,
                  es_gap: float = 0.25, prob_ratio: float = 2.0) -> Gate:
    """Check the target / retain evaluation summaries (``summary.json`` dicts of ``unlearning.evaluate``)."""
    t_es, t_p = _get(target, "forget/extraction_strength"), _get(target, "forget/probability")
    r_es, r_p = _get(retain, "forget/extraction_strength"), _get(retain, "forget/probability")
    numbers = {"target_forget_es": t_es, "target_forget_probability": t_p, "retain_forget_es": r_es,
               "retain_forget_probability": r_p, "min_es": min_es, "es_gap": es_gap, "prob_ratio": prob_ratio}
    ok, checks = [], []

    def check(passed: bool, text: str) -> None:
        ok.append(passed)
        checks.append(("✓ " if passed else "✗ ") + text)

    check(t_es >= min_es, f"target forget ES {t_es:.3f} (needs ≥ {min_es:g}).")
    if retain is None or math.isnan(r_es):
        checks.append("No retain model: whether the target memorised rather than generalised cannot be checked.")
    else:
        check(t_es - r_es >= es_gap, f"ES gap target − retain {t_es - r_es:+.3f} (target {t_es:.3f}, retain "
                                     f"{r_es:.3f}; needs ≥ {es_gap:g}).")
        ratio = t_p / r_p if r_p > 0 else math.inf
        check(ratio >= prob_ratio, f"forget probability target / retain = {ratio:.3g} (target {t_p:.3g}, retain "
                                   f"{r_p:.3g}; needs ≥ {prob_ratio:g}).")
    return Gate(passed=all(ok), checks=checks, numbers=numbers)
