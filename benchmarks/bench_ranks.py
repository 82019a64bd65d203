"""Tracking cost per rank: G-effect and PG-effect tracking with 1 process against 2 (DDP, FSDP2).

Under DDP and FSDP2 every rank computes its share of the probe instances (rank r: r, r + W, ...),
so the per-rank cost of a tracked step should fall with the number of ranks. This benchmark
trains a randomly initialised Llama with ``python -m unlearning.train`` three ways on the same
global batch of 4 forget rows — one process × 4 rows, ``torchrun`` 2 processes × 2 rows (DDP),
and the same with ``--fsdp --fsdp_config '{"fsdp_version": 2}'`` — with tracking at every step
(``--track-geffect --pg-effect --pg-instances probe``: G-effects of the forget and retain probes
and PG-effects of the probe instances), and reads the seconds each rank spent on each part
from the run's manifest (``analysis/geffect/manifest.json``, ``step_info[step]["seconds"]``:
wall and CPU time per rank). A part's cost is the slowest rank's, median over steps 2..S.

Before any ratio is printed, the tracked values of each 2-process run are compared with the
1-process run (NPO, no retain term, plain SGD, fixed data order, so the gradient — and every
G-effect — is the same up to float rounding); the run stops if the relative error exceeds
``--max-error``. Every row prints its error beside its ratio.

The probe set size is the knob that moves the balance between per-row compute (split over
ranks) and per-pass communication (FSDP2 all-gathers every block's parameters in the forward
and again in the backward, and the engine gathers each module's direction once: about three
model sizes per pass, whatever the number of ranks). Target: per-rank cost at 2 ranks <= 0.6x
the 1-rank cost.

    python benchmarks/bench_ranks.py                       # d=256, 4 layers, probes of 32 and 128 rows, 8 steps
    python benchmarks/bench_ranks.py --probe-sizes 32 --modes ddp
    python benchmarks/bench_ranks.py --quick               # d=64, 2 layers, probe 4, 3 steps: agreement only
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from geffect import GEffectTracker  # noqa: E402
from geffect.io import atomic_write_json, atomic_write_text  # noqa: E402

MODES = ("ddp", "fsdp2")
PARTS = ("geffect", "pg_effect")


def build_model_dir(out: Path, hidden: int, layers: int, vocab: int) -> tuple[Path, int]:
    """A random-init Llama (the default recipe's shape, ``hidden`` / ``layers``) and a tokenizer
    trained on the embedded benchmark, saved to ``out``; returns (folder, parameter count)."""
    from unlearning.data import load_split, retain_split_for
    from unlearning.models import DefaultRecipe, build_model, train_tokenizer

    rows = list(load_split("embedded", "forget10")) + list(load_split("embedded", retain_split_for("forget10")))
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in rows], vocab_size=vocab)
    recipe = DefaultRecipe(hidden_size=hidden, num_layers=layers, intermediate_size=2 * hidden, max_length=256)
    model = build_model(tokenizer, recipe)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def train_args(model_dir: Path, out: Path, steps: int, probe: int, per_device: int) -> list[str]:
    return ["--model", str(model_dir), "--output_dir", str(out), "--method", "npo", "--retain_loss", "none",
            "--max_steps", str(steps), "--optim", "sgd", "--learning_rate", "1e-3", "--warmup_steps", "0",
            "--shuffle", "false", "--save_strategy", "no", "--track_geffect", "--geffect_every", "1",
            "--geffect_probe_size", str(probe), "--pg_effect", "--pg_instances", "probe",
            "--geffect_record_batches", "false", "--log_token_weights", "false", "--max_length", "128",
            "--per_device_train_batch_size", str(per_device), "--disable_tqdm", "true", "--logging_steps", "1000",
            "--report_to", "none", "--seed", "0"]


def launch(mode: str, args: list[str], threads: int) -> float:
    """Run one training job; returns its wall seconds. ``mode``: "single", "ddp" or "fsdp2"."""
    if mode == "single":
        cmd = [sys.executable, "-m", "unlearning.train", *args, "--use_cpu"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "unlearning.train", *args]
        if mode == "fsdp2":
            cmd += ["--fsdp", "--fsdp_config", json.dumps({"fsdp_version": 2})]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return time.perf_counter() - t0


def part_seconds(out: Path, part: str, clock: str) -> float:
    """Median over steps >= 2 of the slowest rank's seconds for ``part`` (``clock``: "wall" or "cpu")."""
    manifest = json.loads((out / "analysis" / "geffect" / "manifest.json").read_text())
    key = part if clock == "wall" else f"{part}_cpu"
    per_step = []
    for step, info in sorted(manifest["step_info"].items(), key=lambda kv: int(kv[0])):
        if int(step) >= 2:
            per_step.append(max(rank[key] for rank in info["seconds"]))
    if not per_step:
        raise SystemExit(f"{out}: no timed step after step 1 (run with --steps >= 3)")
    return statistics.median(per_step)


def relative_error(a: Path, b: Path) -> float:
    """Largest relative (Frobenius, per step) error of run ``a``'s G-effects and PG-effects against ``b``'s."""
    ra, rb = GEffectTracker.load(a / "analysis"), GEffectTracker.load(b / "analysis")
    worst = 0.0
    for table in ("table", "pg_table"):
        ta = getattr(ra, table)(view=None).set_index(["step", "probe", "instance", "view", "group"])["value"].sort_index()
        tb = getattr(rb, table)(view=None).set_index(["step", "probe", "instance", "view", "group"])["value"].sort_index()
        if list(ta.index) != list(tb.index):
            raise SystemExit(f"{a} and {b} tracked different rows ({table})")
        for step in sorted(set(tb.index.get_level_values("step"))):
            x, y = torch.tensor(ta.loc[step].to_numpy()), torch.tensor(tb.loc[step].to_numpy())
            worst = max(worst, float((x - y).norm() / y.norm()))
    return worst


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=3072)
    ap.add_argument("--probe-sizes", default="32,128", help="probe rows per probe set (forget and retain), comma-separated")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--modes", default=",".join(MODES), help="ddp, fsdp2 or both")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--max-error", type=float, default=1e-4)
    ap.add_argument("--output", default=None, help="where to write the JSON and Markdown tables "
                    "(default benchmarks/results/bench_ranks[_quick].{json,md})")
    ap.add_argument("--quick", action="store_true", help="d=64, 2 layers, vocab 512, probe 4, 3 steps")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.hidden, opts.layers, opts.vocab, opts.probe_sizes, opts.steps = 64, 2, 512, "4", 3
    modes = [m for m in opts.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"unknown mode(s) {unknown}; use {', '.join(MODES)}")
    probe_sizes = [int(p) for p in opts.probe_sizes.split(",")]

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, n_params = build_model_dir(tmp / "model", opts.hidden, opts.layers, opts.vocab)
        print(f"model: random-init Llama, {n_params / 1e6:.2f}M parameters (d={opts.hidden}, {opts.layers} layers); "
              f"{opts.threads} thread(s) per process; global batch 4 forget rows; steps 2..{opts.steps}", flush=True)
        for probe in probe_sizes:
            runs = {"single": tmp / f"single-{probe}"}
            wall = {"single": launch("single", train_args(model_dir, runs["single"], opts.steps, probe, 4), opts.threads)}
            for mode in modes:
                runs[mode] = tmp / f"{mode}-{probe}"
                wall[mode] = launch(mode, train_args(model_dir, runs[mode], opts.steps, probe, 2), opts.threads)
                err = relative_error(runs[mode], runs["single"])
                if err > opts.max_error:
                    raise SystemExit(f"{mode} with {probe} probe rows disagrees with one process: rel err {err:.2e} "
                                     f"> {opts.max_error:.0e}; nothing timed is reported")
                for part in PARTS:
                    for clock in ("cpu", "wall"):
                        one = part_seconds(runs["single"], part, clock)
                        two = part_seconds(runs[mode], part, clock)
                        rows.append({"probe_rows": probe, "mode": mode, "part": part, "clock": clock, "one_rank_s": one,
                                     "two_ranks_s": two, "ratio": two / one, "rel_err": err})
                print(f"  probe {probe}: {mode} done (job wall {wall[mode]:.0f} s vs 1 process {wall['single']:.0f} s)",
                      flush=True)

    header = "| probe rows | mode | part | clock | 1 rank s | 2 ranks, slowest s | ratio (target <= 0.6) | rel err vs 1 process |"
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['probe_rows']} | {r['mode']} | {r['part']} | {r['clock']} | {r['one_rank_s']:.3f} | "
                     f"{r['two_ranks_s']:.3f} | {r['ratio']:.2f} | {r['rel_err']:.1e} |")
    table = "\n".join(lines)
    print(table)
    out = Path(opts.output) if opts.output else REPO / "benchmarks" / "results" / ("bench_ranks_quick" if opts.quick else "bench_ranks")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"parameters": n_params, "hidden": opts.hidden, "layers": opts.layers, "steps": opts.steps,
            "threads": opts.threads, "load_average": os.getloadavg(), "torch": torch.__version__}
    atomic_write_json(out.with_suffix(".json"), {"meta": meta, "rows": rows})
    atomic_write_text(out.with_suffix(".md"), table + "\n")
    return rows


if __name__ == "__main__":
    main()
