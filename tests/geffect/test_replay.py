"""geffect.replay: G-effects recomputed from the checkpoints of a finished run equal the live ones."""
from __future__ import annotations

import copy
import functools

import pytest
import torch

from geffect import GEffectTracker
from geffect.replay import checkpoints, resolve_objective
from unlearning.data import DataSource


@functools.lru_cache(maxsize=None)
def _loaded(target: str):
    from unlearning.models import load_model_and_tokenizer

    return load_model_and_tokenizer(target, dtype="float32")


def _values(record, pg=False):
    frame = record.pg_table(view=None) if pg else record.table(view=None)
    return frame.set_index(["step", "probe", "instance", "view", "group"])["value"].sort_index()


@pytest.fixture(scope="module")
def live_run(tmp_path_factory, tiny_prepared):
    """NPO (needs a reference) + retain NLL, accumulation 2, tracked every 2 steps and saved every 2 steps."""
    from unlearning.config import UnlearningArguments
    from unlearning.models import tiny_source
    from unlearning.train import run_unlearning

    out = tmp_path_factory.mktemp("live")
    model, tok = _loaded(str(tiny_prepared.target))
    args = UnlearningArguments(
        output_dir=str(out), method="npo", retain_loss="nll", per_device_train_batch_size=2,
        gradient_accumulation_steps=2, max_steps=5, learning_rate=1e-3, warmup_steps=0, max_grad_norm=0.05,
        save_strategy="steps", save_steps=2, save_total_limit=None, shuffle=True, max_length=128, use_cpu=True,
        disable_tqdm=True, seed=0, track_geffect=True, geffect_every=2, geffect_probe_size=4, pg_effect=True,
        log_token_weights=False,
    )
    run_unlearning(args, model=copy.deepcopy(model), tokenizer=tok, data=DataSource(embedded=tiny_source().embedded))
    return out


def test_replay_of_our_run_reproduces_live_values(live_run, tmp_path):
    from unlearning.replay import replay_run

    live = GEffectTracker.load(live_run / "analysis")
    assert live.steps == [1, 3, 5] and live.batch_steps == [1, 3, 5]
    assert [s for s, _ in checkpoints(live_run)] == [2, 4, 5]
    record = replay_run(live_run, pg_effect="batch", output_dir=tmp_path / "replay")
    assert record.steps == [1, 3, 5]  # checkpoint-2 -> step 3, checkpoint-4 -> step 5, initial model -> step 1
    assert record.manifest["step_info"]["3"]["checkpoint"] == "checkpoint-2"
    for pg in (False, True):
        a, b = _values(live, pg), _values(record, pg)
        assert list(a.index) == list(b.index)
        for step in (1, 3, 5):
            ta, tb = torch.tensor(a.loc[step].to_numpy()), torch.tensor(b.loc[step].to_numpy())
            err = float((ta - tb).norm() / ta.norm())
            assert err < 1e-5, f"step {step} (pg={pg}): rel err {err:.2e}"


def test_replay_cli_through_the_entry_point(live_run, tmp_path, monkeypatch, capsys):
    """``python -m geffect.replay`` resolves the objective name through the geffect.objectives entry point."""
    import json

    from geffect.replay import main

    dist = tmp_path / "site" / "replay_probe-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: replay-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[geffect.objectives]\nunlearning = unlearning.replay:resolve_objective\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    objective = resolve_objective("npo", beta=0.5)
    assert type(objective).__name__ == "NPO" or getattr(objective, "name", None) == "npo"
    with pytest.raises(ValueError, match="valid names: .*satimp"):
        resolve_objective("no-such-method")

    config = json.loads((live_run / "run_config.json").read_text())
    main([str(live_run), "--objective", "npo", "--objective_kwargs", json.dumps(config["objective"]["hparams"]),
          "--initial_model", config["model"], "--ref_model", "initial", "--steps", "3",
          "--output_dir", str(tmp_path / "cli")])
    assert "replayed steps [3]" in capsys.readouterr().out
    a = _values(GEffectTracker.load(live_run / "analysis")).loc[3]
    b = _values(GEffectTracker.load(tmp_path / "cli")).loc[3]
    assert float((torch.tensor(a.to_numpy()) - torch.tensor(b.to_numpy())).norm() / torch.tensor(a.to_numpy()).norm()) < 1e-5


def test_replay_with_a_fixed_batch_equals_gradient_effect(live_run, tmp_path):
    """A fixed replay batch (no recorded batches needed): checkpoint-S's G-effect is gradient_effect
    of the objective at θ_S on that batch."""
    from geffect import gradient_effect
    from geffect.replay import replay
    from unlearning import objectives

    live = GEffectTracker.load(live_run / "analysis")
    batch = live.step_batches(3)[0]
    objective = objectives.get("ga")
    record = replay(live_run, objective, batches=batch, steps=[5], output_dir=tmp_path / "fixed")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(live_run / "checkpoint-4"), dtype=torch.float32).eval()
    probes = live.probes()
    table = record.table()
    for probe, pb in probes.items():
        want = gradient_effect(model, objective, batch, pb)
        rows = table[(table.step == 5) & (table.probe == probe)]
        got = rows.pivot(index="instance", columns="group", values="value").loc[pb["index"].tolist(), list(want.groups)]
        assert float((torch.tensor(got.to_numpy()) - want.matrix.double()).norm() / want.matrix.norm()) < 1e-5


def test_replay_errors(live_run, tmp_path):
    from geffect.replay import replay

    with pytest.raises(ValueError, match="reference model"):
        replay(live_run, resolve_objective("unlearning.objectives:get", name="npo"), output_dir=tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="no run folder"):
        checkpoints(tmp_path / "missing")
    with pytest.raises(ValueError, match="nothing to replay"):
        replay(live_run, lambda m, inputs: torch.zeros(()), steps=[2], output_dir=tmp_path / "y")


def test_replay_cli_help_lists_every_option(capsys):
    import dataclasses
    import re

    from geffect.replay import ReplayArguments, main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    squashed = re.sub(r"\s+", "", out)
    for f in dataclasses.fields(ReplayArguments):
        assert re.search(rf"--{f.name}\b", out), f.name
        assert re.sub(r"\s+", "", f.metadata["help"]) in squashed, f.name
