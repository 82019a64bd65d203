"""Two CPU processes (torchrun, gloo) train and track like one process on the same global batch.

2 processes × 2 rows per device and 1 process × 4 rows see the same 4 forget rows per step
(no shuffling; accelerate hands consecutive batches to consecutive ranks). NPO's loss is a
mean over instances and the retain term is off, so the gradient - and therefore every
tracked G-effect - is the same up to float rounding. (Token-mean objectives such as GA
average per micro-batch, so 2×2 equals 1 process × 2 rows × 2 accumulation steps instead.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

DRIVER = """
import sys
from transformers import HfArgumentParser
from unlearning.config import UnlearningArguments
from unlearning.data import DataSource
from unlearning.models import load_model_and_tokenizer, tiny_source
from unlearning.train import run_unlearning

(args,) = HfArgumentParser(UnlearningArguments).parse_args_into_dataclasses(sys.argv[2:])
model, tok = load_model_and_tokenizer(sys.argv[1], dtype="float32")
run_unlearning(args, model=model, tokenizer=tok, data=DataSource(embedded=tiny_source().embedded))
"""

COMMON = [
    # plain SGD: Adam's first update is ~lr·sign(g), which turns float-rounding differences of
    # near-zero gradient entries into lr-sized weight differences at step 2
    "--method", "npo", "--retain_loss", "none", "--max_steps", "2", "--optim", "sgd", "--learning_rate", "1e-2",
    "--warmup_steps", "0", "--shuffle", "false", "--save_strategy", "no", "--track_geffect",
    "--geffect_probe_size", "8", "--max_length", "128", "--use_cpu", "--disable_tqdm", "true",
    "--seed", "0",
]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env[var] = "1"
    return env


def _run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"


def _geffects(out: Path):
    from geffect import GEffectTracker

    table = GEffectTracker.load(out / "analysis").table()
    return table.set_index(["step", "probe", "instance", "group"])["value"].sort_index()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_prepared):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    target = str(tiny_prepared.target)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver), target,
          "--output_dir", str(ddp), "--per_device_train_batch_size", "2", *COMMON], REPO)
    _run([sys.executable, str(driver), target, "--output_dir", str(single), "--per_device_train_batch_size", "4",
          *COMMON], REPO)

    cfg = json.loads((ddp / "run_config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["global_batch_size"] == 4 and cfg["per_device_train_batch_size"] == 2

    from unlearning.hooks import read_jsonl

    train_rows = [r for r in read_jsonl(ddp / "logs.jsonl", dedupe=None) if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2]  # only rank 0 writes

    a, b = _geffects(ddp), _geffects(single)
    assert list(a.index) == list(b.index)
    assert sorted(set(a.index.get_level_values("step"))) == [1, 2]
    for step in (1, 2):
        ta, tb = torch.tensor(a.loc[step].to_numpy()), torch.tensor(b.loc[step].to_numpy())
        err = float((ta - tb).norm() / tb.norm())
        assert err < 1e-5, f"step {step}: rel err {err:.2e}"

    wa = read_jsonl(ddp / "analysis" / "token_weights.jsonl")
    wb = read_jsonl(single / "analysis" / "token_weights.jsonl")
    assert [r["n"] for r in wa] == [r["n"] for r in wb]  # weights gathered from both ranks
    assert wa[0]["mean"] == pytest.approx(wb[0]["mean"], rel=1e-5)
