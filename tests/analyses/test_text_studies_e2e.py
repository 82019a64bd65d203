"""End-to-end: ``python -m analyses muse --quick`` and ``wmdp --quick``, embedded and from folders.

Slow (a minute or two each on a CPU): the real pipeline -- default text models trained from
scratch with the quick recipe, unlearning with G-effect tracking on chunks, the benchmark's
evaluation at trajectory checkpoints, masks, attributions, report -- into temporary folders
with a temporary model cache. The folder runs read fixture folders written by the test in each
benchmark's own layout (muse_bench's ``<subset>/<split>.json``; WMDP's ``wmdp-<subset>.jsonl``,
``<name>-corpus.jsonl``, ``mmlu.jsonl``), so the ``--data FOLDER`` code path is exercised.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from functools import partial

from analyses import cli
from analyses.pipeline import DONE_FILE

pytestmark = pytest.mark.slow
muse_main, wmdp_main = partial(cli.main, study="muse"), partial(cli.main, study="wmdp")
MUSE_METHODS = ("ga", "npo", "satimp", "wagle_gd")
WMDP_METHODS = ("rmu", "ga", "npo", "random_gd")


def _run(main, tmp_path_factory, name, methods, *extra):
    out, cache = tmp_path_factory.mktemp(name), tmp_path_factory.mktemp(f"{name}_cache")
    argv = ["--quick", "--output-dir", str(out), "--cache-dir", str(cache), "--no-progress", "--no-png",
            "--methods", ",".join(methods), *extra]
    summary = main(argv)
    summary["argv"] = argv
    return out, summary


@pytest.fixture(scope="module")
def muse(tmp_path_factory):
    return _run(muse_main, tmp_path_factory, "muse", MUSE_METHODS)


@pytest.fixture(scope="module")
def wmdp(tmp_path_factory):
    return _run(wmdp_main, tmp_path_factory, "wmdp", WMDP_METHODS)


def _check_common(out, summary, methods, metric_cols):
    assert (out / "report.html").is_file() and summary["gate_passed"], summary["gate"]["text"]
    assert not summary["failed"] and summary["cpu_s"] > 0
    for method in methods:
        assert (out / "runs" / method / DONE_FILE).is_file(), method
    for name in ("geffect_steps", "geffect_layers", "pg_effects", "token_weights", "metrics", "trajectory",
                 "token_attribution", "mask_density"):
        assert (out / "data" / f"{name}.parquet").is_file(), name
    steps = pd.read_parquet(out / "data" / "geffect_steps.parquet")
    assert set(steps["method"]) == set(methods) and set(steps["probe"]) == {"forget", "retain"}
    ga = steps[(steps["method"] == "ga") & (steps["probe"] == "forget")].sort_values("step")
    # GA raises the forget chunks' NLL over the run (a single step on other chunks may lower a probe's)
    assert ga["value"].sum() < 0, "GA's cumulative unlearning G-effect must be negative"
    weights = pd.read_parquet(out / "data" / "token_weights.parquet")
    assert weights["likelihood"].between(0, 1).all() and set(methods) - {"rmu"} <= set(weights["method"])
    metrics = pd.read_parquet(out / "data" / "metrics.parquet").set_index("method")
    assert {"target", "retain", *methods} <= set(metrics.index)
    assert set(metric_cols) <= set(metrics.columns) and "forget_es" not in metrics.columns
    traj = pd.read_parquet(out / "data" / "trajectory.parquet")
    assert set(traj["method"]) == set(methods) and (traj.groupby("method")["step"].min() == 0).all()
    assert traj.groupby("method").size().min() >= 3  # step 0, an intermediate checkpoint, the end
    html = (out / "report.html").read_text()
    assert html.index("Sanity gate passed") < html.index("id='findings'")
    assert "matched_utility" in {f["key"] for f in summary["findings"]}
    return metrics, traj


def test_muse_quick_study(muse):
    out, summary = muse
    metrics, traj = _check_common(out, summary, MUSE_METHODS, ["verbmem_f", "knowmem_f", "knowmem_r", "privleak"])
    steps = pd.read_parquet(out / "data" / "geffect_steps.parquet")
    ga = steps[(steps["method"] == "ga") & (steps["probe"] == "forget")].sort_values("step")
    assert ga["value"].iloc[0] < 0, "GA's first step on forget documents raises the forget-document probe's NLL"
    assert metrics.loc["retain", "privleak"] == 0.0 and metrics.loc["target", "privleak"] < -50
    assert metrics.loc["target", "verbmem_f"] > metrics.loc["retain", "verbmem_f"] + 0.3
    assert {"verbmem_f", "knowmem_r", "privleak"} <= set(traj.columns)
    text = next(f["text"] for f in summary["findings"] if f["key"] == "matched_utility")
    assert text.startswith("VerbMem where KnowMem on retain falls")
    rc = json.loads((out / "runs" / "ga" / "run_config.json").read_text())
    assert rc["data_source"]["kind"] == "text" and rc["n_forget"] == rc["data_source"]["forget"]["chunks"]


def test_wmdp_quick_study(wmdp):
    out, summary = wmdp
    metrics, _ = _check_common(out, summary, WMDP_METHODS, ["wmdp", "wmdp_bio", "wmdp_cyber", "mmlu"])
    assert metrics.loc["target", "wmdp"] > metrics.loc["retain", "wmdp"]
    rc = json.loads((out / "runs" / "rmu" / "run_config.json").read_text())
    assert rc["trainable"] == r"^(?:model\.layers\.0\.mlp\.down_proj\.weight)$"  # 2 blocks: block 0 of the preset
    assert rc["objective"]["hparams"]["steer"] == 20.0 and rc["objective"]["hparams"]["layer"] == 0


def test_rerun_reuses_everything(muse):
    out, first = muse
    before = {m: (out / "runs" / m / DONE_FILE).read_text() for m in MUSE_METHODS}
    summary = muse_main(first["argv"])
    assert {m: (out / "runs" / m / DONE_FILE).read_text() for m in MUSE_METHODS} == before
    assert summary["timings"].get("references_s") is None  # reused


def test_muse_from_a_folder(tmp_path_factory, muse_folder):
    data = muse_folder
    out, summary = _run(muse_main, tmp_path_factory, "muse_folder", ("ga",), "--data", str(data))
    assert (out / "runs" / "ga" / DONE_FILE).is_file() and not summary["failed"]
    assert summary["config"]["resolved"]["data"]["data"] == str(data)
    assert summary["config"]["resolved"]["data"]["embedded"] is None


def test_wmdp_from_a_folder(tmp_path_factory, wmdp_folder):
    data = wmdp_folder
    out, summary = _run(wmdp_main, tmp_path_factory, "wmdp_folder", ("ga",), "--data", str(data))
    assert (out / "runs" / "ga" / DONE_FILE).is_file() and not summary["failed"]
    resolved = summary["config"]["resolved"]["data"]
    assert resolved["corpora"] == resolved["utility"] == str(data) and resolved["embedded"] is None
