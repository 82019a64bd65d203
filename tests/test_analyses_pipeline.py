"""Pieces of the study pipeline that need no training: CLI parsing, specs, markers, data subsets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from analyses import geffect_tofu
from analyses.pipeline import (DEFAULT_METHODS, StudyConfig, _done, _mark_done, method_spec, metric_row,
                               subset_tofu_folder)

TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


def parse(*argv: str) -> StudyConfig:
    return geffect_tofu.config_from_args(geffect_tofu.build_parser().parse_args(list(argv)))


def test_default_config_runs_every_method():
    config = parse()
    assert config.methods == DEFAULT_METHODS and config.data == "embedded" and not config.quick
    assert config.output_dir == "outputs/geffect_tofu"


def test_quick_and_explicit_flags():
    config = parse("--quick", "--methods", "ga, npo", "--steps", "7", "--eval-subset", "0", "--bf16")
    assert config.quick and config.steps == 7 and config.methods == ("ga", "npo")
    assert config.eval_subset is None and config.bf16
    assert parse("--quick").probe_size == StudyConfig.quick_config().probe_size
    assert parse("--epochs", "3").steps is None


def test_method_specs():
    assert method_spec("wagle_gd").objective == "gd" and method_spec("wagle_gd").mask == "wagle"
    assert method_spec("wtnpo").objective == "wtnpo"  # any registered objective
    with pytest.raises(ValueError, match="unknown method"):
        method_spec("not_a_method")


def test_done_marker_matches_key(tmp_path):
    assert not _done(tmp_path, "k1")
    _mark_done(tmp_path, "k1", seconds=1.0)
    assert _done(tmp_path, "k1") and not _done(tmp_path, "k2")
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_metric_row_reads_evaluation_summary():
    row = metric_row("ga", {"forget/extraction_strength": 0.2, "retain/extraction_strength": 0.7,
                            "forget_quality": 0.01, "model_utility": 0.4, "sets": {"forget": 3}})
    assert row["forget_es"] == 0.2 and row["model_utility"] == 0.4 and not row["reference"]
    assert row["forget_probability"] != row["forget_probability"]  # NaN when missing


@pytest.mark.skipif(not TOFU.is_dir(), reason=f"no real TOFU rows in {TOFU}")
def test_subset_tofu_folder_keeps_forget_and_first_retain_authors(tmp_path):
    dst = subset_tofu_folder(TOFU, tmp_path / "sub", "forget01", max_authors=5)
    lines = lambda p: sum(1 for line in open(p) if line.strip())  # noqa: E731
    assert lines(dst / "forget01.json") == 40
    assert lines(dst / "retain99.json") == lines(dst / "retain90.json") == 60  # 5 - 2 forget authors = 3 x 20
    assert lines(dst / "retain_perturbed.json") == 60
    assert lines(dst / "world_facts.json") == lines(TOFU / "world_facts.json")
    first = json.loads(open(dst / "retain90.json").readline())
    assert first == json.loads(open(TOFU / "retain90.json").readline())
    assert subset_tofu_folder(TOFU, tmp_path / "sub", "forget01", max_authors=5) == dst  # idempotent
