"""Real reference check: our aggregation reproduces TOFU's published numbers from its per-item logs.

Data: the official TOFU evaluation logs of Phi-1.5 retain models (the folder ``$TOFU_REFERENCE_DIR``; ``REF`` below has the default). Skips cleanly
when they are absent.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from unlearning.metrics import forget_quality, forget_truth_ratio
from unlearning.metrics.aggregate import summary_from_tofu_log, truth_ratios_from_tofu_log

REF = Path(os.environ.get("TOFU_REFERENCE_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tofu-reference"))
pytestmark = pytest.mark.skipif(not (REF / "phi_retain90").is_dir(), reason=f"TOFU reference logs not found at {REF}")


def _agg(name: str) -> dict:
    return json.loads((REF / name / "eval_log_aggregated.json").read_text())


def test_model_utility_of_phi_retain90_matches_published():
    s = summary_from_tofu_log(_agg("phi_retain90"))
    # published (TOFU legacy logs, retain90 Phi-1.5): model utility 0.532
    assert s["model_utility"] == pytest.approx(0.5320, abs=1e-3)
    assert s["model_utility"] == pytest.approx(0.531991, abs=1e-5)  # value of TOFU's own formula on these logs
    assert s["retain/probability"] == pytest.approx(0.92311, abs=1e-4)
    assert s["real_authors/probability"] == pytest.approx(0.38419, abs=1e-4)  # option-normalised


def test_forget_truth_ratio_matches_logged_per_item_values():
    log = _agg("phi_retain90")["eval_log_forget.json"]
    ours = truth_ratios_from_tofu_log(log)  # from avg_paraphrased_loss / average_perturb_loss
    logged = np.array([float(log["truth_ratio"][k]) for k in sorted(log["truth_ratio"], key=int)])
    assert ours.shape == (300,)
    np.testing.assert_allclose(ours, logged, rtol=1e-5)
    assert 0 < forget_truth_ratio(ours) <= 1


def test_forget_quality_between_retain_models_is_high():
    r90 = truth_ratios_from_tofu_log(_agg("phi_retain90")["eval_log_forget.json"])
    r95 = truth_ratios_from_tofu_log(_agg("phi_retain95")["eval_log_forget.json"])
    assert forget_quality(r90, r90) == pytest.approx(1.0)
    # two models that never saw (most of) these authors: indistinguishable truth-ratio distributions
    assert forget_quality(r95, r90) > 0.05
