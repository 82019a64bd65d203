"""End-to-end: ``python -m analyses tofu --quick`` builds the whole study, then resumes.

Slow (a minute or two on a CPU): runs the real pipeline (default-model preparation with the
tiny recipe, unlearning with G-effect tracking, evaluation, masks, attributions, report) into
a temporary folder with a temporary model cache. Four methods cover every code path: plain
(GA), reference model (NPO), token reweighting with a retain term (SatImp), weight mask
(WAGLE-masked GD).
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from analyses import cli
from analyses.pipeline import DONE_FILE

pytestmark = pytest.mark.slow
METHODS = ("ga", "npo", "satimp", "wagle_gd")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    cache = tmp_path_factory.mktemp("cache")
    argv = ["--quick", "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress", "--no-png",
            "--methods", ",".join(METHODS)]
    summary = cli.main(argv, study="tofu")
    return out, cache, argv, summary


def test_quick_study_writes_everything(study):
    out, _, _, summary = study
    assert (out / "report.html").is_file() and (out / "summary.json").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["findings"] and on_disk["timings"]["total_s"] > 0
    for method in METHODS:
        assert (out / "runs" / method / DONE_FILE).is_file(), method
    for name in ("geffect_steps", "geffect_layers", "pg_effects", "token_weights", "mask_density", "metrics",
                 "token_attribution"):
        assert (out / "data" / f"{name}.parquet").is_file(), name
        assert (out / "data" / f"{name}.csv").is_file(), name
    for fig in ("geffect_steps", "layer_heatmap", "layer_buckets", "pg_scatter", "token_weights", "mask_density",
                "tradeoff", "token_attribution"):
        assert (out / "figures" / f"{fig}.html").is_file(), fig


def test_quick_study_data_is_consistent(study):
    out = study[0]
    steps = pd.read_parquet(out / "data" / "geffect_steps.parquet")
    assert set(steps["method"]) == set(METHODS)
    assert set(steps["probe"]) == {"forget", "retain"}
    ga = steps[(steps["method"] == "ga") & (steps["probe"] == "forget")].sort_values("step")
    assert ga["value"].iloc[0] < 0, "GA's first-step unlearning G-effect must be negative (it raises the forget risk)"
    metrics = pd.read_parquet(out / "data" / "metrics.parquet").set_index("method")
    assert {"target", "retain", *METHODS} <= set(metrics.index)
    assert metrics["forget_quality"].notna().all()
    masks = pd.read_parquet(out / "data" / "mask_density.parquet")
    assert set(masks["mask"]) == {"wagle", "magnitude", "random"}
    weights = pd.read_parquet(out / "data" / "token_weights.parquet")
    assert weights["likelihood"].between(0, 1).all()
    html = (out / "report.html").read_text()
    assert html.count("<script type='text/javascript'>") == 1  # plotly.js inlined once
    for fig in ("geffect_steps", "token_attribution"):
        assert f'id="fig-{fig}"' in html


def test_rerun_reuses_finished_methods(study):
    out, _, argv, _ = study
    before = {m: (out / "runs" / m / DONE_FILE).read_text() for m in METHODS}
    summary = cli.main(argv, study="tofu")
    after = {m: (out / "runs" / m / DONE_FILE).read_text() for m in METHODS}
    assert before == after  # nothing retrained
    assert summary["timings"]["total_s"] < 120  # only collect + report
