"""unlearning.hooks: table helpers and summaries, checked against hand-computed values."""
from __future__ import annotations

import json
import math

import pytest
import torch

from unlearning.hooks import (
    append_jsonl,
    read_jsonl,
    token_weight_stats,
    truncate_step_tables,
    weight_vs_likelihood,
)


def test_token_weight_stats_by_hand():
    w = torch.tensor([0.0, 1.0, 1.0, 2.0])
    s = token_weight_stats(w)
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(1.0)
    assert s["std"] == pytest.approx(math.sqrt(0.5))
    assert s["q0"] == 0.0 and s["q100"] == 2.0 and s["q50"] == pytest.approx(1.0)
    q = torch.tensor([0.25, 0.25, 0.5])  # normalised non-zero weights
    assert s["entropy"] == pytest.approx(float(-(q * q.log()).sum()))
    assert s["entropy_norm"] == pytest.approx(s["entropy"] / math.log(4))
    assert s["frac_small"] == pytest.approx(0.25)


def test_token_weight_stats_uniform_has_entropy_one():
    s = token_weight_stats(torch.full((10,), 0.3))
    assert s["entropy_norm"] == pytest.approx(1.0)
    assert s["std"] == pytest.approx(0.0)


def test_token_weight_stats_empty():
    assert token_weight_stats(torch.zeros(0)) == {"n": 0}


def test_weight_vs_likelihood_bins():
    p = torch.tensor([0.05, 0.07, 0.55, 1.0])
    w = torch.tensor([1.0, 3.0, 5.0, 7.0])
    rows = weight_vs_likelihood(w, p.log(), bins=10)
    assert len(rows) == 10
    assert rows[0]["count"] == 2 and rows[0]["mean_weight"] == pytest.approx(2.0)
    assert rows[0]["mean_p"] == pytest.approx(0.06)
    assert rows[5]["count"] == 1 and rows[5]["mean_weight"] == pytest.approx(5.0)
    assert rows[9]["count"] == 1  # p = 1 lands in the last bin
    assert math.isnan(rows[3]["mean_weight"]) and rows[3]["count"] == 0
    assert sum(r["count"] for r in rows) == 4


def test_read_jsonl_dedupes_and_skips_torn_line(tmp_path):
    path = tmp_path / "t.jsonl"
    append_jsonl(path, [{"step": 1, "v": 1}, {"step": 2, "v": 2}, {"step": 2, "v": 3}, {"note": "x"}])
    with open(path, "a") as f:
        f.write('{"step": 3, "v"')  # killed mid-write
    rows = read_jsonl(path)
    assert [r.get("v") for r in rows] == [1, 3, None]
    assert len(read_jsonl(path, dedupe=None)) == 4


def test_truncate_step_tables(tmp_path):
    append_jsonl(tmp_path / "logs.jsonl", [{"step": s} for s in (1, 2, 3, 4)])
    append_jsonl(tmp_path / "analysis" / "geffect" / "x.jsonl", [{"step": s, "v": 0} for s in (1, 3)])
    parts = tmp_path / "analysis" / "geffect"
    for name in ("step_000002.parquet", "step_000003.parquet", "pg_step_000003.parquet",
                 "probe_token_weights_step_000003.parquet", "probe_token_weights_step_000001.parquet"):
        (parts / name).write_bytes(b"")
    (parts / "manifest.json").write_text('{"steps": [2, 3], "pg_steps": [3], "step_info": {"2": {}, "3": {}}}')
    changed = truncate_step_tables(tmp_path, 2)
    assert len(changed) == 5
    assert sorted(p.name for p in parts.iterdir()) == ["manifest.json", "probe_token_weights_step_000001.parquet",
                                                       "step_000002.parquet", "x.jsonl"]
    manifest = json.loads((parts / "manifest.json").read_text())
    assert manifest["steps"] == [2] and manifest["pg_steps"] == [] and list(manifest["step_info"]) == ["2"]
    assert [r["step"] for r in read_jsonl(tmp_path / "logs.jsonl")] == [1, 2]
    lines = (tmp_path / "analysis" / "geffect" / "x.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1]
