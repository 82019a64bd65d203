"""geffect.tracker: incremental, atomic, resumable G-effect records."""
from __future__ import annotations

import json

import pytest
import torch

from geffect import GEffectTracker, flat_gradient, parameter_groups, per_instance_dots
from geffect.engine import model_logits
from geffect.losses import answer_nll
from geffect.testing import random_batch, random_direction, tiny_causal_lm



@pytest.fixture(scope="module")
def setup():
    model = tiny_causal_lm("llama", layers=3)
    v = model.config.vocab_size
    probes = {"forget": random_batch(v, batch_size=3, seed=1), "retain": random_batch(v, batch_size=2, seed=2)}
    probes["retain"]["index"] = torch.tensor([10, 11])
    return model, probes


def test_track_write_reload_resume(tmp_path, setup, monkeypatch):
    model, probes = setup
    tracker = GEffectTracker(tmp_path, probes)
    directions = {s: random_direction(model, seed=s) for s in (0, 5)}
    for step, d in directions.items():
        res = tracker.track(step, model, d, extra={"loss": 1.5})
        expect = per_instance_dots(model, probes["forget"], d)
        assert torch.allclose(res["forget"].matrix.double(), expect.double(), rtol=1e-6)
    n_groups = len(parameter_groups(model))
    files = sorted(p.name for p in (tmp_path / "geffect").iterdir())
    assert files == ["manifest.json", "step_000000.parquet", "step_000005.parquet"]  # no temp files

    table = tracker.table()
    assert list(table.columns) == ["step", "probe", "instance", "view", "group", "value", "cumulative"]
    assert len(table) == 2 * (3 + 2) * n_groups
    assert set(table[table.probe == "retain"].instance) == {10, 11}
    cum = table[(table.step == 5) & (table.probe == "forget") & (table.group == "lm_head")].sort_values("instance")
    total = tracker.cumulative["forget"][:, list(parameter_groups(model)).index("lm_head")]
    assert torch.allclose(torch.tensor(cum.cumulative.to_numpy()), total.double(), rtol=1e-6)

    summary = tracker.summary_table()
    assert list(summary.columns) == ["step", "probe", "view", "group", "value", "cumulative"]
    thirds = tracker.summary_table("thirds")
    assert set(thirds.group) == {"embed", "shallow", "middle", "deep", "lm"}
    fine_tot = summary.groupby(["step", "probe"]).value.sum()
    coarse_tot = thirds.groupby(["step", "probe"]).value.sum()
    assert torch.allclose(torch.tensor(fine_tot.to_numpy()), torch.tensor(coarse_tot.to_numpy()), rtol=1e-5)

    manifest = json.loads((tmp_path / "geffect" / "manifest.json").read_text())
    assert manifest["steps"] == [0, 5] and manifest["sizes"] == {"forget": 3, "retain": 2}
    assert manifest["step_info"]["5"]["loss"] == 1.5 and manifest["step_info"]["5"]["direction_norm"] > 0

    reader = GEffectTracker.load(tmp_path)
    assert reader.steps == [0, 5]
    assert reader.table().equals(table)

    # resume: the step on disk is not recomputed, a new one is appended
    resumed = GEffectTracker(tmp_path, probes)
    calls = []
    import geffect.tracker.ranks as tr

    real = tr.per_instance_dots
    monkeypatch.setattr(tr, "per_instance_dots", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = resumed.track(5, model, directions[5])
    assert not calls
    assert torch.allclose(again["forget"].matrix, res["forget"].matrix.double(), rtol=1e-6)
    resumed.track(7, model, directions[5])
    assert calls and GEffectTracker.load(tmp_path).steps == [0, 5, 7]

    with pytest.raises(ValueError, match="new output_dir"):
        GEffectTracker(tmp_path, {"forget": probes["forget"]})


def test_pg_rows_and_bf16(tmp_path, setup):
    model, probes = setup
    bf16 = tiny_causal_lm("llama", layers=3, dtype=torch.bfloat16)
    tracker = GEffectTracker(tmp_path, probes, coarse="attn_mlp")
    forget = random_batch(model.config.vocab_size, batch_size=2, seed=4)
    d = flat_gradient(bf16, lambda m: -answer_nll(model_logits(m, forget["input_ids"], None), forget["labels"]).mean())
    res = tracker.track(1, bf16, d)
    assert res["forget"].matrix.dtype == torch.float32 and torch.isfinite(res["forget"].matrix).all()
    assert set(tracker.table("attn_mlp").group) == {"embed", "attn", "mlp", "norm", "lm_head"}
    pg = tracker.track_instance_effect(1, bf16, forget, instance_ids=[7, 8])
    assert pg["retain"].matrix.shape[0] == 2
    table = tracker.pg_table()
    assert set(table.instance) == {7, 8} and set(table.probe) == {"forget", "retain"}
    assert GEffectTracker.load(tmp_path).pg_steps == [1]
    with pytest.raises(FileNotFoundError):
        GEffectTracker.load(tmp_path / "missing")


def test_replay_files_note_truncate_clear(tmp_path, setup):
    """probes.pt and batches_step_N.pt round-trip, follow truncate / clear like the other parts;
    note() adds to a step's manifest entry."""
    model, probes = setup
    tracker = GEffectTracker(tmp_path, probes)
    tracker.save_probes()
    micro = [{"forget": probes["forget"], "retain": probes["retain"]}]
    for step in (1, 3):
        tracker.track(step, model, random_direction(model, seed=step))
        tracker.write_step_batches(step, micro)
    tracker.note(3, seconds=[{"geffect": 0.5}])
    record = GEffectTracker.load(tmp_path)
    assert record.batch_steps == [1, 3] and record.manifest["step_info"]["3"]["seconds"] == [{"geffect": 0.5}]
    back = record.step_batches(3)
    assert torch.equal(back[0]["retain"]["index"], probes["retain"]["index"])
    assert all(torch.equal(record.probes()[k]["input_ids"], probes[k]["input_ids"]) for k in probes)
    with pytest.raises(FileNotFoundError, match="record_batches=True"):
        record.step_batches(2)
    record.truncate(2)
    assert record.batch_steps == [1] and record.steps == [1]
    record.clear()
    assert not list((tmp_path / "geffect").iterdir())


@pytest.mark.parametrize("rows_per_pass", [1, 2, 4])
def test_rows_per_pass_gives_the_same_values(tmp_path, setup, rows_per_pass, monkeypatch):
    """G-effects and PG-effects computed a few probe rows per pass equal the one-pass values (float64:
    rows are independent; only the summation order of the probe-risk gradient changes), with
    ceil(rows / rows_per_pass) passes."""
    import geffect.tracker.ranks as tracker_module

    model, probes = setup
    model64 = tiny_causal_lm("llama", layers=3, dtype=torch.float64)
    unlearn = random_batch(model.config.vocab_size, batch_size=3, seed=5)
    d = random_direction(model64, seed=6)
    results = {}
    calls = []
    real = tracker_module.per_instance_dots
    monkeypatch.setattr(tracker_module, "per_instance_dots",
                        lambda m, batch, *a, **k: calls.append(int(batch["input_ids"].shape[0])) or real(m, batch, *a, **k))
    for rpp in (None, rows_per_pass):
        calls.clear()
        tracker = GEffectTracker(tmp_path / str(rpp), probes, rows_per_pass=rpp)
        results[rpp] = (tracker.track(1, model64, d), tracker.track_instance_effect(1, model64, unlearn))
        if rpp is not None:  # 5 probe rows (3 forget + 2 retain), then 3 unlearning rows per probe set
            assert calls == [len(r) for r in _chunks(5, rpp)] + [len(r) for r in _chunks(3, rpp)] * 2
            assert max(calls) <= rpp
    for one, many in zip(results[None], results[rows_per_pass]):
        for probe in probes:
            a, b = one[probe].matrix, many[probe].matrix
            assert a.dtype == torch.float64 and a.shape == b.shape
            assert float((a - b).norm() / a.norm()) < 1e-12, probe
    with pytest.raises(ValueError, match="rows_per_pass"):
        GEffectTracker(tmp_path / "bad", probes, rows_per_pass=0)


def _chunks(n: int, size: int) -> list[range]:
    count = -(-n // size)
    step = -(-n // count)
    return [range(k * step, min(n, (k + 1) * step)) for k in range(count)]
