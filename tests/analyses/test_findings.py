"""Findings on synthetic frames whose answer is known, the sanity gate, and what is never reported."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from analyses import synthetic
from analyses.findings import (compute_findings, ga_retain_mirrors_unlearning, layers_carrying_unlearning,
                               matched_point, retain_small_relative, satimp_ordering, wagle_tradeoff,
                               weighting_shrinks_geffect, weights_not_from_likelihood)
from analyses.gate import check_subject


def _steps(rows):
    return {"geffect_steps": pd.DataFrame(rows, columns=["method", "step", "probe", "value"])}


def _traj(curves: dict[str, list[tuple[float, float]]]):
    """curves: method -> [(forget_es, retain_es)] at steps 0, 1, 2, ... (step 0 = the target)."""
    rows = [(m, s, f, r) for m, pts in curves.items() for s, (f, r) in enumerate(pts)]
    return {"trajectory": pd.DataFrame(rows, columns=["method", "step", "forget_es", "retain_es"])}


def test_ga_mirror_supported_and_contradicted():
    mirror = _steps([("ga", s, "forget", -10.0 * s) for s in (1, 2, 3)] + [("ga", s, "retain", -4.0 * s) for s in (1, 2, 3)])
    f, = ga_retain_mirrors_unlearning(mirror)
    assert f.verdict == "supports" and f.data["ratio"] == pytest.approx(0.4) and f.data["corr"] == pytest.approx(1.0)
    helps = _steps([("ga", s, "forget", -10.0 * s) for s in (1, 2, 3)] + [("ga", s, "retain", 1.0 * s) for s in (1, 2, 3)])
    assert ga_retain_mirrors_unlearning(helps)[0].verdict == "contradicts"


def test_layers_finding_picks_the_largest_third():
    rows = []
    for m in ("ga", "npo"):
        for g, v in (("embed", -0.1), ("layer.0", -1.0), ("layer.1", -1.0), ("layer.2", -6.0), ("layer.3", -8.0),
                     ("layer.4", -0.5), ("layer.5", -0.5), ("final_norm", 0.0), ("lm_head", -2.0)):
            rows.append((m, 1, "forget", g, v))
    frames = {"geffect_layers": pd.DataFrame(rows, columns=["method", "step", "probe", "group", "value"])}
    f = layers_carrying_unlearning(frames)[0]
    # thirds of 6 layers: shallow = layers 0-1 (2), middle = 2-3 (14), deep = 4-5 (1); total |G| = 19.1
    assert f.data["bucket_share"]["middle"] == pytest.approx(14 / 19.1)
    assert f.verdict == "contradicts" and "middle third leads for 2 of 2" in f.text


def test_weighting_shrinks_compares_each_method_with_itself():
    rows = [("ga", s, "forget", -1.0 * s) for s in range(1, 7)]  # grows x ~5.5
    rows += [("npo", s, "forget", -100.0 / s) for s in range(1, 7)]  # shrinks, at a 100x larger raw scale
    f, = weighting_shrinks_geffect(_steps(rows))
    assert f.verdict == "supports" and f.data["late_over_early"]["npo"] < 1 < f.data["late_over_early"]["ga"]
    rows = [r for r in rows if r[0] == "ga"] + [("npo", s, "forget", -100.0 * s * s) for s in range(1, 7)]
    assert weighting_shrinks_geffect(_steps(rows))[0].verdict == "contradicts"


def test_retain_relative_is_a_within_method_ratio():
    rows = [("ga", 1, "forget", -1.0), ("ga", 1, "retain", -0.8), ("wga", 1, "forget", -1e-4),
            ("wga", 1, "retain", -1e-6), ("tnpo", 1, "forget", -50.0), ("tnpo", 1, "retain", 5.0)]
    f, = retain_small_relative(_steps(rows))
    assert f.verdict == "supports"
    assert f.data["ratio"] == pytest.approx({"ga": 0.8, "wga": 0.01, "tnpo": 0.1})


def test_matched_point_interpolates_and_reports_unreached():
    traj = pd.DataFrame({"step": [0, 4, 8], "forget_es": [0.9, 0.5, 0.1], "retain_es": [1.0, 0.95, 0.75]})
    f, step, reached = matched_point(traj, 0.9)  # between steps 4 and 8: w = (0.95 - 0.9) / 0.2 = 0.25
    assert reached and f == pytest.approx(0.5 + 0.25 * (0.1 - 0.5)) and step == pytest.approx(5.0)
    f, step, reached = matched_point(traj, 0.5)
    assert not reached and (f, step) == (0.1, 8)


def test_satimp_ordering_verdicts():
    target = (0.9, 1.0)
    ordered = _traj({"satimp": [target, (0.2, 0.8)], "simsat": [target, (0.4, 0.8)], "simimp": [target, (0.6, 0.8)]})
    assert satimp_ordering(ordered)[0].verdict == "supports"
    reversed_ = _traj({"satimp": [target, (0.6, 0.8)], "simsat": [target, (0.4, 0.8)], "simimp": [target, (0.2, 0.8)]})
    assert satimp_ordering(reversed_)[0].verdict == "contradicts"
    # satimp never spends the budget but already forgets more than simsat at the budget: still "yes"
    unreached = _traj({"satimp": [target, (0.1, 0.99)], "simsat": [target, (0.4, 0.8)], "simimp": [target, (0.6, 0.8)]})
    assert satimp_ordering(unreached)[0].verdict == "supports"
    # satimp never spends the budget and forgets less so far: undecided
    undecided = _traj({"satimp": [target, (0.7, 0.99)], "simsat": [target, (0.4, 0.8)], "simimp": [target, (0.6, 0.8)]})
    assert satimp_ordering(undecided)[0].verdict == "inconclusive"


def test_wagle_tradeoff_against_random_mask():
    target = (0.9, 1.0)
    frames = _traj({"wagle_gd": [target, (0.2, 0.8)], "random_gd": [target, (0.5, 0.8)], "gd": [target, (0.3, 0.8)]})
    f, = wagle_tradeoff(frames)
    assert f.verdict == "supports" and "vs dense GD: better" in f.text


def test_no_likelihood_relation_for_weights_computed_from_that_likelihood():
    """simsat / satimp / wga weights are functions of the logged likelihood: reporting their rank
    correlation would test a definition, so no finding may mention them as tested."""
    p = pd.Series([0.1, 0.3, 0.5, 0.7, 0.9] * 4)
    rows = [(m, 1 + i // 5, i % 5, float(x), float(w)) for m, fn in
            (("simsat", lambda x: x ** 5), ("satimp", lambda x: x ** 5 * (1 - x) ** 0.1), ("wga", lambda x: x))
            for i, (x, w) in enumerate(zip(p, p.map(fn)))]
    frames = {"token_weights": pd.DataFrame(rows, columns=["method", "step", "instance", "likelihood", "weight"])}
    assert weights_not_from_likelihood(frames) == []
    assert not any("simsat" in f.data.get("spearman", {}) for f in compute_findings(frames))
    # TNPO after step 1 depends on p_ref too: that relation is tested
    tnpo = [("tnpo", s, i, float(x), float(x * 2 / (1 + x))) for s in (1, 2, 3) for i, x in enumerate(p[:5])]
    frames["token_weights"] = pd.concat([frames["token_weights"], pd.DataFrame(tnpo, columns=frames["token_weights"].columns)])
    f, = weights_not_from_likelihood(frames)
    assert set(f.data["spearman"]) == {"tnpo tokens (steps > 1)"} and f.verdict == "supports"
    assert "simsat" in f.text and "Not tested" in f.text


def test_gate_fires_on_an_untrained_target_and_skips_dependent_findings():
    untrained = {"forget/extraction_strength": 0.02, "forget/probability": 0.009}
    retain = {"forget/extraction_strength": 0.02, "forget/probability": 0.008}
    gate = check_subject(untrained, retain)
    assert not gate.passed and "FAILED" in gate.text() and "0.020" in gate.text()
    findings = compute_findings(synthetic.frames(), gate=gate)
    assert findings[0].key == "gate" and findings[0].verdict == "contradicts"
    assert {f.key for f in findings} <= {"gate", "wagle_mask"}  # nothing that presumes memorisation
    good = check_subject({"forget/extraction_strength": 0.9, "forget/probability": 0.8},
                         {"forget/extraction_strength": 0.2, "forget/probability": 0.1})
    assert good.passed and "passed" in good.text()
    assert not check_subject({"forget/extraction_strength": 0.9, "forget/probability": 0.8},
                             {"forget/extraction_strength": 0.8, "forget/probability": 0.7}).passed  # no gap
    alone = check_subject({"forget/extraction_strength": 0.9, "forget/probability": 0.8}, None)
    assert alone.passed and "No retain model" in alone.text()


def test_missing_data_gives_no_finding_and_no_error():
    assert compute_findings({}) == []
    assert compute_findings({"geffect_steps": pd.DataFrame()}) == []


def test_all_findings_on_synthetic_data_name_a_claim_and_a_verdict():
    findings = compute_findings(synthetic.frames())
    assert len(findings) >= 9
    for f in findings:
        assert f.claim and f.text and f.verdict in {"supports", "contradicts", "inconclusive", "describes"}, f.key
        assert not any(isinstance(v, float) and math.isnan(v) for v in [f.data.get("ratio", 0.0)])


def test_granularity_ablation_verdict():
    from analyses.findings import granularity_ablation

    target = (0.9, 1.0)
    frames = _traj({"satimp": [target, (0.2, 0.8)], "satimp_instance": [target, (0.5, 0.8)],
                    "satimp_batch": [target, (0.6, 0.8)]})
    f, = granularity_ablation(frames)
    assert f.verdict == "supports" and set(f.data["points"]) == {"token", "instance", "batch"}
    frames = _traj({"satimp": [target, (0.5, 0.8)], "satimp_instance": [target, (0.2, 0.8)]})
    assert granularity_ablation(frames)[0].verdict == "contradicts"


def test_gate_fires_on_a_really_untrained_target(tiny_llama, tiny_tokenizer, tiny_prepared):
    """A random-init 'target' evaluated on the tiny benchmark fails the gate; the trained tiny pair passes it."""
    from unlearning.evaluate import evaluate_model
    from unlearning.models import load_model_and_tokenizer, tiny_source

    kw = dict(sets=("forget",), generate=False, progress=False, batch_size=8)
    untrained = evaluate_model(tiny_llama, tiny_tokenizer, tiny_source(), "forget10", **kw).summary
    retain_model, tok = load_model_and_tokenizer(tiny_prepared.retain)
    retain = evaluate_model(retain_model, tok, tiny_source(), "forget10", **kw).summary
    assert not check_subject(untrained, retain).passed
    target_model, tok = load_model_and_tokenizer(tiny_prepared.target)
    target = evaluate_model(target_model, tok, tiny_source(), "forget10", **kw).summary
    gate = check_subject(target, retain)
    assert gate.passed, gate.text()
