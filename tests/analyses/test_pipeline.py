"""Pieces of the study that need no training: CLI, derived cache keys, markers, readers, failure path."""
from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from analyses.config import QUICK, STAGES, StudyConfig, parse_study_args, stage_fields, stage_key
from analyses.frames import geffect_frames, metric_row
from analyses.pipeline import DEFAULT_METHODS, Study, _done, _mark_done, method_spec


def test_default_config_runs_every_method():
    config = parse_study_args([])
    assert config.methods == list(DEFAULT_METHODS) and config.data == "embedded" and not config.quick
    assert config.output_dir == "outputs/geffect_tofu"


def test_quick_and_explicit_flags():
    config = parse_study_args(["--quick", "--methods", "ga, npo", "--max-steps", "7", "--eval-subset", "0", "--bf16"])
    assert config.quick and config.max_steps == 7 and config.methods == ["ga", "npo"]
    assert config.eval_subset is None and config.bf16
    quick = parse_study_args(["--quick"])
    assert quick.geffect_probe_size == QUICK["geffect_probe_size"] == StudyConfig.quick_config().geffect_probe_size
    assert parse_study_args(["--num-train-epochs", "3"]).max_steps == -1  # -1: the epochs decide
    assert parse_study_args(["--methods", "ga", "satimp"]).methods == ["ga", "satimp"]
    assert parse_study_args(["--no-png", "--no_progress"]).png is False


def test_help_lists_every_field_with_its_help(capsys):
    with pytest.raises(SystemExit):
        parse_study_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(StudyConfig):
        assert f"--{f.name}" in text, f.name
        assert " ".join(f.metadata["help"].split())[:30] in text, f.name


def test_every_field_declares_the_stages_it_affects():
    """Adding a config field without saying which cached stages it changes must fail here."""
    for f in dataclasses.fields(StudyConfig):
        assert "stages" in f.metadata, f"StudyConfig.{f.name} has no metadata['stages'] declaration"
        assert set(f.metadata["stages"]) <= set(STAGES), (f.name, f.metadata["stages"])
        assert f.metadata.get("help"), f"StudyConfig.{f.name} has no help text"


def _keys(config: StudyConfig) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in STAGES:  # in upstream order
        keys[stage] = stage_key(config, stage, keys)
    return keys


@pytest.mark.parametrize("field_name, value, changed", [
    ("max_length", 97, {"references", "masks", "methods"}),
    ("wagle_density", 0.3, {"masks", "methods"}),
    ("learning_rate", 5e-4, {"methods"}),
    ("eval_subset", 7, {"references", "methods"}),
    ("data", "/some/tofu", {"models", "references", "masks", "methods"}),
    ("split", "forget05", {"models", "references", "masks", "methods"}),
    ("output_dir", "elsewhere", set()),
    ("methods", ["ga"], set()),
])
def test_cache_keys_follow_the_declared_fields(field_name, value, changed):
    base = StudyConfig()
    other = dataclasses.replace(base, **{field_name: value})
    a, b = _keys(base), _keys(other)
    assert {s for s in STAGES if a[s] != b[s]} == changed
    assert field_name in {f for s in changed for f in stage_fields(s)} or not changed


def test_stage_key_needs_upstream_keys():
    with pytest.raises(ValueError, match="needs the keys"):
        stage_key(StudyConfig(), "methods", {})


def test_method_specs():
    assert method_spec("wagle_gd").objective == "gd" and method_spec("wagle_gd").mask == "wagle"
    assert method_spec("wtnpo").objective == "wtnpo"  # any registered objective
    with pytest.raises(ValueError, match="unknown method"):
        method_spec("not_a_method")


def test_done_marker_matches_key(tmp_path):
    assert not _done(tmp_path, "k1")
    _mark_done(tmp_path, "k1", seconds=1.0)
    assert _done(tmp_path, "k1") and not _done(tmp_path, "k2")
    assert not list(tmp_path.glob(".*tmp"))  # written atomically


def test_metric_row_reads_evaluation_summary():
    row = metric_row("ga", {"forget/extraction_strength": 0.2, "retain/extraction_strength": 0.7,
                            "forget_quality": 0.01, "model_utility": 0.4, "sets": {"forget": 3}})
    assert row["forget_es"] == 0.2 and row["model_utility"] == 0.4 and not row["reference"]
    assert row["forget_probability"] != row["forget_probability"]  # NaN when missing


def test_unreadable_run_becomes_no_data(tmp_path, caplog):
    """A run whose G-effect records cannot be read gives empty frames and a logged error (this
    branch used to raise NameError)."""
    records = tmp_path / "analysis" / "geffect"
    records.mkdir(parents=True)
    (records / "manifest.json").write_text(json.dumps({"views": {"fine": ["embed"]}, "groups": {"embed": []}}))
    (records / "step_000001.parquet").write_bytes(b"not parquet")
    with caplog.at_level(logging.ERROR, logger="analyses.frames"):
        frames = geffect_frames(tmp_path, "ga")
    assert all(frame.empty for frame in frames.values())
    assert "could not read the G-effect records" in caplog.text and "ga" in caplog.text
    assert all(frame.empty for frame in geffect_frames(tmp_path / "missing", "ga").values())  # no records at all


def test_a_failing_method_is_noted_and_the_others_run(tmp_path, monkeypatch):
    """One method raising must not stop the study: the others finish, the failure is in the
    summary and in the report's notes."""
    ran = []

    def run_method(self, method):
        ran.append(method)
        if method == "npo":
            raise RuntimeError("boom")

    for stage in ("prepare_models", "references", "masks"):
        monkeypatch.setattr(Study, stage, lambda self: None)
    monkeypatch.setattr(Study, "run_method", run_method)
    config = StudyConfig(methods=["ga", "npo", "satimp"], output_dir=str(tmp_path), png=False, progress=False,
                         allow_failed_gate=True)  # no reference evaluations in this test
    study = Study(config)
    study.paths = {"target": None, "retain": None}
    summary = study.run()
    assert ran == ["ga", "npo", "satimp"]
    assert summary["failed"] == {"npo": "RuntimeError: boom"}
    assert any("npo failed" in note and "boom" in note for note in study.notes())
    assert "npo failed" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["failed"] == {"npo": "RuntimeError: boom"}


def test_study_data_source(tmp_path):
    quick = Study(StudyConfig.quick_config(output_dir=str(tmp_path)))
    assert quick.source.embedded is not None and quick.recipe is not None  # tiny embedded benchmark
    assert Study(StudyConfig(output_dir=str(tmp_path), max_authors=6)).source.max_authors == 6
    folder = Study(StudyConfig.quick_config(output_dir=str(tmp_path), data=str(tmp_path)))
    assert folder.source.max_authors == 4 and folder.source.embedded is None  # quick: a few authors


def test_failed_gate_stops_before_unlearning_and_says_so(tmp_path, monkeypatch):
    """An untrained target: the report says so at the top, no method runs, the CLI exit code is 2."""
    from analyses.cli import exit_code

    for name, es, p in (("target", 0.02, 0.009), ("retain", 0.02, 0.008)):
        folder = tmp_path / "references" / f"eval_{name}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"forget/extraction_strength": es, "forget/probability": p}))
    for stage in ("prepare_models", "references", "masks"):
        monkeypatch.setattr(Study, stage, lambda self: None)
    ran = []
    monkeypatch.setattr(Study, "run_method", lambda self, m: ran.append(m))
    config = StudyConfig(methods=["ga"], output_dir=str(tmp_path), png=False, progress=False)
    study = Study(config)
    study.paths = {"target": None, "retain": None}
    summary = study.run()
    assert ran == [] and summary["gate_passed"] is False and exit_code(summary) == 2
    assert exit_code(summary, allow_failed_gate=True) == 0
    html = (tmp_path / "report.html").read_text()
    assert html.index("Sanity gate FAILED") < html.index("id='findings'")
    assert [f["key"] for f in summary["findings"]] == ["gate"]
    allowed = Study(dataclasses.replace(config, allow_failed_gate=True))
    allowed.paths = {"target": None, "retain": None}
    allowed.run()
    assert ran == ["ga"]
