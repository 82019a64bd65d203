"""``python -m unlearning.train`` end to end, argument parsing, and resuming a killed run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unlearning.runs import read_jsonl

REPO = Path(__file__).resolve().parents[3]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env[var] = "1"
    return env


def test_parser_accepts_dashes_and_underscores(tmp_path):
    from unlearning.cli.train import parse_args

    a = parse_args(["--output-dir", str(tmp_path), "--learning-rate", "2e-5", "--method", "npo",
                    "--retain-loss", "kl", "--track-geffect", "--geffect-every", "3", "--per_device_train_batch_size", "2",
                    "--gradient-accumulation-steps", "4", "--num-train-epochs", "2", "--seed", "7"])
    assert (a.learning_rate, a.method, a.retain_loss, a.track_geffect, a.geffect_every) == (2e-5, "npo", "kl", True, 3)
    assert (a.per_device_train_batch_size, a.gradient_accumulation_steps, a.num_train_epochs, a.seed) == (2, 4, 2.0, 7)
    assert a.remove_unused_columns is False and a.weight_decay == 0.0 and a.max_grad_norm == 1.0
    assert a.objective_hparams() == {"retain_loss": "kl"}


def test_parser_rejects_bad_values(tmp_path):
    from unlearning.cli.train import parse_args

    with pytest.raises(ValueError, match="valid methods"):
        parse_args(["--output-dir", str(tmp_path), "--method", "forget-everything"])
    with pytest.raises(ValueError, match="retain_loss"):
        parse_args(["--output-dir", str(tmp_path), "--retain-loss", "mse"])
    with pytest.raises(ValueError, match="track-geffect"):
        parse_args(["--output-dir", str(tmp_path), "--pg-effect"])


def test_cli_end_to_end(tmp_path, tiny_prepared):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "unlearning.train", "--model", str(tiny_prepared.target), "--data", "embedded",
        "--split", "forget10", "--method", "satimp", "--retain-loss", "nll", "--retain-weight", "0.1",
        "--max-steps", "2", "--per-device-train-batch-size", "4", "--track-geffect", "--geffect-every", "1",
        "--geffect-probe-size", "4", "--pg-effect", "--max-length", "128", "--use-cpu", "--disable-tqdm", "true",
        "--output-dir", str(out),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "tokenizer_config.json").is_file()
    cfg = json.loads((out / "run_config.json").read_text())
    assert cfg["method"] == "satimp" and cfg["world_size"] == 1 and cfg["global_batch_size"] == 4
    assert cfg["objective"]["hparams"]["retain_weight"] == 0.1 and cfg["finished"] and cfg["global_step"] == 2
    assert "torch" in cfg["versions"] and cfg["retain_split"] == "retain90"
    rows = [r for r in read_jsonl(out / "logs.jsonl", dedupe=("step", "kind")) if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("geffect/forget" in r and "geffect/retain" in r for r in rows)
    assert (out / "analysis" / "token_weights.jsonl").is_file()
    assert (out / "analysis" / "weight_vs_likelihood.jsonl").is_file()
    from geffect import GEffectTracker

    record = GEffectTracker.load(out / "analysis")
    table = record.table()
    assert set(table["step"]) == {1, 2} and set(table["probe"]) >= {"forget", "retain"}
    assert record.pg_steps == [1, 2]  # --pg-effect: one PG-effect part per tracked step
    pg = record.pg_table()
    assert len(set(pg[pg["step"] == 1]["instance"])) == 4  # the step's 4 forget rows


def test_resume_keeps_rows_once(tmp_path, tiny_prepared):
    """A run killed after step 4 with its last checkpoint at step 2 resumes without duplicate rows."""
    from unlearning.training import UnlearningArguments
    from unlearning.data import DataSource
    from unlearning.models import load_model_and_tokenizer, tiny_source
    from unlearning.training import run_unlearning

    out = tmp_path / "run"

    def args(**kw):
        return UnlearningArguments(
            output_dir=str(out), method="ga", max_steps=4, per_device_train_batch_size=2, learning_rate=5e-4,
            warmup_steps=0, shuffle=False, save_strategy="steps", save_steps=2, save_total_limit=None,
            track_geffect=True, geffect_probe_size=4, max_length=128, use_cpu=True, disable_tqdm=True, **kw,
        )

    def run(a):
        model, tok = load_model_and_tokenizer(str(tiny_prepared.target), dtype="float32")
        return run_unlearning(a, model=model, tokenizer=tok, data=DataSource(embedded=tiny_source().embedded))

    first = run(args())
    first_losses = {r["step"]: r["loss"] for r in first.trainer.state.log_history if "loss" in r}
    shutil.rmtree(out / "checkpoint-4")  # "killed" after logging step 4, before its checkpoint
    with open(out / "logs.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # and mid-write
    second = run(args(resume=True))
    assert second.run_config["resumed_from"].endswith("checkpoint-2")

    rows = [r for r in read_jsonl(out / "logs.jsonl", dedupe=None) if r["kind"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:  # deterministic data order: resumed steps reproduce the first run
        assert r["loss"] == pytest.approx(first_losses[r["step"]], rel=1e-4)
    tw = read_jsonl(out / "analysis" / "token_weights.jsonl", dedupe=None) if (out / "analysis" / "token_weights.jsonl").exists() else []
    assert len({r["step"] for r in tw}) == len(tw)
    from geffect import GEffectTracker

    table = GEffectTracker.load(out / "analysis").table()
    assert not table.duplicated(["step", "probe", "instance", "group"]).any()
    assert sorted(set(table["step"])) == [1, 2, 3, 4]
