"""CUDA checks (marker ``cuda``; skipped without a GPU; run by scripts/gpu_check.sh).

- bf16 ghost vs loop on the GPU, and both against a float64 CPU reference;
- a float32 model under ``torch.autocast("cuda", bfloat16)``: the rule hooks run with autocast
  off and ghost matches loop;
- ``python -m unlearning.train ... --track-geffect --bf16`` on the default small model, two
  steps on CUDA: the G-effect tables are written, finite, and the model trained in bf16.

Bounds are those of the CPU tests (tests/geffect/test_bf16.py, measured there) with a 2x margin for
the GPU's different bf16 kernels; each test prints its measured error (``pytest -s``), which
docs/scale.md asks to record.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geffect.engine import per_instance_dots

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bf16 import fro, setup, spy_autocast_in_rules  # noqa: E402  (the CPU twins of these tests)

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_cuda_bf16_ghost_matches_loop(family):
    m64, batch, d = setup(family)
    ref = per_instance_dots(m64, batch, d)  # float64, CPU
    m16 = copy.deepcopy(m64).to("cuda", torch.bfloat16)
    ghost = per_instance_dots(m16, batch, d)
    loop = per_instance_dots(m16, batch, d, engine="loop")
    assert ghost.dtype == loop.dtype == torch.float32 and ghost.is_cuda
    err, err_ref, loop_ref = fro(ghost, loop), fro(ghost, ref), fro(loop, ref)
    print(f"\n[cuda bf16 {family}] ghost vs loop {err:.2e}, ghost vs float64 {err_ref:.2e}, loop vs float64 {loop_ref:.2e}")
    assert err < 1e-2
    assert err_ref < 4e-2


def test_cuda_autocast_rules_in_float32(monkeypatch):
    m64, batch, d = setup("llama")
    m32 = copy.deepcopy(m64).to("cuda", torch.float32)
    seen = spy_autocast_in_rules(monkeypatch, "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ghost = per_instance_dots(m32, batch, d)
        loop = per_instance_dots(m32, batch, d, engine="loop")
    err = fro(ghost, loop)
    print(f"\n[cuda autocast] ghost vs loop {err:.2e}")
    assert seen and not any(seen)
    assert ghost.dtype == torch.float32
    assert err < 1.2e-2


def test_cuda_train_tracks_geffect_in_bf16(tmp_path):
    """Two unlearning steps of GA on the default small model, bf16 on the GPU, G-effects tracked."""
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.setdefault("GEFFECT_CACHE", str(tmp_path / "cache"))  # scripts/gpu_check.sh may point it at a prebuilt model
    cmd = [sys.executable, "-m", "unlearning.train", "--method", "ga", "--output-dir", str(out), "--track-geffect",
           "--bf16", "--max-steps", "2", "--save-strategy", "no", "--geffect-probe-size", "8",
           "--disable-tqdm", "true", "--seed", "0"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=270)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n--- stderr\n{proc.stderr[-6000:]}"
    cfg = json.loads((out / "run_config.json").read_text())
    print(f"\n[cuda train] run_config: {json.dumps({k: cfg.get(k) for k in ('device', 'dtype', 'bf16')})}")

    from geffect import GEffectTracker

    table = GEffectTracker.load(out / "analysis").table()
    assert sorted(set(table["step"])) == [1, 2]
    assert set(table["probe"]) >= {"forget", "retain"}
    assert table["value"].notna().all() and (table["value"].abs() < float("inf")).all()
    totals = GEffectTracker.load(out / "analysis").totals()
    print(f"[cuda train] whole-model G-effects per step:\n{totals}")
