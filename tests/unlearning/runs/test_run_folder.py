"""unlearning.runs.folder: the run folder's JSON-lines tables (append, read, truncate on resume)."""
from __future__ import annotations

import json

from unlearning.runs import append_jsonl, read_jsonl, truncate_step_tables


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
