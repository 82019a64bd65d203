"""G-effects at scale: ghost engine vs one training step, the per-instance loop and Opacus.

For a random-init Llama and N probe instances of T tokens, each configuration computes the
per-instance, per-layer G-effect matrix ``E[i, g] = <grad_g R(x_i), d_g>`` (Wang et al.,
ICLR 2025, Definition 1 per instance and per parameter group) with

- ``floor``  : one plain training step of the batch: forward + backward of sum_i R(x_i) with
               parameter gradients (no matrix; the cost the analysis piggybacks on),
- ``ghost``  : geffect's default engine (one forward + one backward, per-layer hook rules),
- ``loop``   : the reference engine, one forward + backward per instance,
- ``opacus`` : per-sample gradients from ``opacus.GradSampleModule`` (loss_reduction="sum",
               strict=False so Hugging Face's RMSNorm goes through Opacus' functorch path),
               contracted with the direction per group. It materialises N x params per-sample
               gradients, so it runs only where ``floor peak + N * params * bytes`` fits the
               memory budget; elsewhere its memory is extrapolated (marked ``~``).

The direction d is a seeded random tensor per parameter (the cost does not depend on its
values). **Agreement is checked before timing**: for each size a first subprocess computes
ghost, loop and (where it fits) Opacus matrices on a small batch (N <= 4, T <= 64) and the
timing is skipped if they disagree; the timed runs then save their full-size matrices and the
table prints each engine's error against the loop beside its ratios (relative Frobenius error
||E - E_loop|| / ||E_loop||).

**Memory**: every configuration runs in a fresh subprocess. On CPU, a background thread samples
the resident set size from /proc/self/statm every millisecond during the measured call (after
``gc.collect()`` and glibc ``malloc_trim(0)``, with ``MALLOC_MMAP_THRESHOLD_=1048576`` so freed
large blocks go back to the OS); ``peak`` is the process's highest RSS in the call (model,
direction, gradients, activations: everything), ``+call`` the increase over the RSS just before
it. ``resource.getrusage`` (ru_maxrss, the lifetime peak) is recorded as a cross-check. On CUDA
the same two numbers come from ``torch.cuda.max_memory_allocated`` (peak stats reset before the
call). The floor holds the parameter gradients where the engines hold the direction (in training
the direction *is* that gradient), so the ``peak`` ratio is the like-for-like comparison.

Time: wall clock (median of the repeats; 1 repeat for models over 500M parameters on CPU) after a
one-sequence warm-up; CPU seconds (process_time, all threads) as well, since the benchmark
machine may be shared.

    python benchmarks/bench_scale.py --quick                  # tiny sizes, about a minute
    OMP_NUM_THREADS=2 python benchmarks/bench_scale.py        # 50M, 200M, 1B on CPU (~20-40 min)
    python benchmarks/bench_scale.py --device cuda --dtype bfloat16 --sizes 1B   # GPU check

Writes ``benchmarks/results/bench_scale[_<tag>].json`` and ``.md`` (one table).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from _common import PeakMemory, make_batch  # noqa: E402

from geffect.engine import model_logits, per_instance_dots  # noqa: E402
from geffect.groups import parameter_groups  # noqa: E402
from geffect.losses import answer_nll  # noqa: E402

logger = logging.getLogger("bench_scale")

RESULTS = Path(__file__).resolve().parent / "results"
# Llama architecture, untied head, multi-head attention (kv heads = heads)
SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=172, num_attention_heads=4, vocab_size=512),
    "small": dict(hidden_size=128, num_hidden_layers=4, intermediate_size=344, num_attention_heads=4, vocab_size=2048),
    "50M": dict(hidden_size=512, num_hidden_layers=8, intermediate_size=1408, num_attention_heads=8, vocab_size=32000),
    "200M": dict(hidden_size=1024, num_hidden_layers=12, intermediate_size=2816, num_attention_heads=16,
                 vocab_size=32000),
    "1B": dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=5632, num_attention_heads=32,
               vocab_size=32000),
}
METHODS = ("floor", "ghost", "loop", "opacus")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


# --------------------------------------------------------------------------- model and data
def llama_config(size: str) -> LlamaConfig:
    dims = SIZES[size]
    return LlamaConfig(**dims, num_key_value_heads=dims["num_attention_heads"], max_position_embeddings=1024,
                       tie_word_embeddings=False, attention_dropout=0.0)


def count_params(size: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(llama_config(size)).parameters())


def build_model(size: str, dtype: torch.dtype, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(llama_config(size))
    return model.to(dtype).eval()


def make_direction(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A seeded random direction in the parameters' dtype (the tracker hands the gradient, same size)."""
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g).mul_(1e-3).to(p.device, p.dtype) for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- measurement


def floor_step(model, batch, direction, groups):
    """One plain training step's compute: forward + backward with parameter gradients."""
    logits = model_logits(model, batch["input_ids"], batch["attention_mask"])  # (N, T, V)
    answer_nll(logits, batch["labels"]).sum().backward()
    return None


def ghost(model, batch, direction, groups):
    return per_instance_dots(model, batch, direction, groups=groups, engine="ghost")


def loop(model, batch, direction, groups):
    return per_instance_dots(model, batch, direction, groups=groups, engine="loop")


class OpacusMatrix:
    """G-effect matrix from Opacus per-sample gradients: E[i, g] = sum_{p in g} <grad_sample_p[i], d_p>."""

    def __init__(self, model) -> None:
        from opacus import GradSampleModule  # benchmark-only dependency (extra "bench")

        self.model = model
        # strict=False: modules without an Opacus sampler (HF's LlamaRMSNorm) use its functorch path
        self.wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum", strict=False)
        self.wrapped.train()  # Opacus captures activations only in training mode; dropout is 0 here

    def __call__(self, model, batch, direction, groups):
        for p in self.model.parameters():
            p.grad, p.grad_sample = None, None
        logits = self.wrapped(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        answer_nll(logits, batch["labels"]).sum().backward()  # per-sample grads of R(x_i)
        del logits
        params = dict(self.model.named_parameters())
        N = batch["input_ids"].shape[0]
        out = torch.zeros(N, len(groups), dtype=torch.float32 if direction_dtype(direction) != torch.float64
                          else torch.float64, device=batch["input_ids"].device)
        for j, names in enumerate(groups.values()):
            for n in names:
                gs = params[n].grad_sample  # (N, *shape)
                if gs is not None:
                    out[:, j] += (gs.to(out.dtype) * direction[n].to(out.dtype)).flatten(1).sum(1)
        return out


def direction_dtype(direction) -> torch.dtype:
    return next(iter(direction.values())).dtype


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def worker(spec: dict) -> dict:
    """One configuration in this (fresh) process: build, warm up, measure, save the matrix."""
    torch.set_num_threads(spec["threads"])
    device, dtype = spec["device"], DTYPES[spec["dtype"]]
    t_build = time.perf_counter()
    model = build_model(spec["size"], dtype, device)
    vocab = model.config.vocab_size
    groups = parameter_groups(model)
    batch = make_batch(vocab, spec["n"], spec["seq_len"], spec["seed"], device)
    warm = make_batch(vocab, 1, 16, spec["seed"] + 1, device)
    direction = make_direction(model, spec["seed"] + 2)
    build_s = time.perf_counter() - t_build
    methods = {"floor": floor_step, "ghost": ghost, "loop": loop}
    out: dict = {"spec": spec, "build_s": build_s}
    if spec["method"] == "check":  # agreement of all engines on this (small) batch
        mats = {"ghost": ghost(model, batch, direction, groups), "loop": loop(model, batch, direction, groups)}
        if spec.get("opacus"):
            mats["opacus"] = OpacusMatrix(model)(model, batch, direction, groups)
        ref = mats["loop"]
        out["errors"] = {k: rel_fro(v, ref) for k, v in mats.items() if k != "loop"}
        out["max_errors"] = {k: max_rel(v, ref) for k, v in mats.items() if k != "loop"}
        return out
    fn = OpacusMatrix(model) if spec["method"] == "opacus" else methods[spec["method"]]
    fn(model, warm, direction, groups)  # warm-up: kernels, thread pool, allocator
    model.zero_grad(set_to_none=True)
    times, cpus, peaks, deltas, matrix = [], [], [], [], None
    load_before = os.getloadavg()  # (1, 5, 15 min): the machine may be shared
    for _ in range(spec["repeats"]):
        with PeakMemory(device) as mem:
            w, c = time.perf_counter(), time.process_time()
            matrix = fn(model, batch, direction, groups)
            _sync(device)
            times.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        peaks.append(mem.peak)
        deltas.append(mem.delta)
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            if hasattr(p, "grad_sample"):
                p.grad_sample = None
    out.update(seconds=statistics.median(times), cpu_seconds=statistics.median(cpus), times=times, cpu_times=cpus,
               loadavg_before=load_before, loadavg_after=os.getloadavg(),
               peak_bytes=max(peaks), call_bytes=max(deltas),
               ru_maxrss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if matrix is not None:
        torch.save(matrix.detach().double().cpu(), spec["matrix_path"])
    return out


def rel_fro(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.double().cpu(), ref.double().cpu()
    return float((a - ref).norm() / ref.norm())


def max_rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest entry error relative to the largest |entry| of the reference."""
    a, ref = a.double().cpu(), ref.double().cpu()
    return float((a - ref).abs().max() / ref.abs().max())


# --------------------------------------------------------------------------- driver
def spawn(spec: dict, threads: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576", OMP_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr[-3000:]
        logger.error("configuration %s failed (exit %s):\n%s", spec, proc.returncode, tail)
        return {"spec": spec, "error": f"exit {proc.returncode}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"}
    return json.loads(lines[-1][len("RESULT "):])


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in fh}
        return info["MemAvailable"]
    except (OSError, KeyError):  # pragma: no cover
        return 8 << 30


def opacus_available() -> bool:
    try:
        import opacus  # noqa: F401
    except ImportError:
        return False
    return True


def run(args) -> dict:
    device, dtype = args.device, args.dtype
    bytes_per = DTYPES[dtype].itemsize
    budget = args.mem_budget_gb * 2**30 if args.mem_budget_gb else (
        torch.cuda.get_device_properties(0).total_memory * 0.85 if device.startswith("cuda") else available_bytes() * 0.8)
    use_opacus = not args.no_opacus and opacus_available() and dtype != "bfloat16"
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))  # matrices handed from the workers to the driver
    report = {"device": device, "dtype": dtype, "n": args.n, "seq_len": args.seq_len, "threads": args.threads,
              "torch": torch.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
              "memory_budget_bytes": int(budget), "opacus": use_opacus, "sizes": {}}
    for size in args.sizes:
        params = count_params(size)
        entry = {"params": params, "config": SIZES[size], "rows": {}}
        report["sizes"][size] = entry
        repeats = args.repeats or (3 if device.startswith("cuda") or params <= 5e8 else 1)
        base = dict(size=size, device=device, dtype=dtype, threads=args.threads, seed=0)
        # 1. agreement before timing, on a small batch
        n_c, t_c = min(args.n, 4), min(args.seq_len, 64)
        opacus_check = use_opacus and 3.5 * params * bytes_per + n_c * params * 4 < budget
        logger.info("[%s: %d parameters] checking ghost / loop%s agreement (N=%d, T=%d)", size, params,
                    " / opacus" if opacus_check else "", n_c, t_c)
        check = spawn({**base, "method": "check", "n": n_c, "seq_len": t_c, "opacus": opacus_check, "repeats": 1},
                      args.threads)
        entry["check"] = check
        if "error" in check:
            continue
        logger.info("[%s] check: relative Frobenius error vs loop %s", size,
                    {k: f"{v:.1e}" for k, v in check["errors"].items()})
        if max(check["errors"].values()) > args.tolerance:
            entry["skipped"] = f"engines disagree beyond {args.tolerance:g}: {check['errors']}"
            logger.error("[%s] %s; not timing", size, entry["skipped"])
            continue
        # 2. timing and memory, one fresh process per method
        for method in args.methods:
            if method == "opacus":
                floor_peak = entry["rows"].get("floor", {}).get("peak_bytes", 2 * params * bytes_per)
                need = floor_peak + args.n * params * bytes_per  # per-sample gradients in the parameter dtype
                if not use_opacus or need > budget:
                    floor_call = entry["rows"].get("floor", {}).get("call_bytes", params * bytes_per)
                    entry["rows"]["opacus"] = {"extrapolated": True, "peak_bytes": need,
                                               "call_bytes": floor_call + args.n * params * bytes_per,
                                               "reason": "not installed or bf16" if not use_opacus else
                                               f"needs ~{need / 2**30:.1f} GiB > budget {budget / 2**30:.1f} GiB"}
                    continue
            logger.info("[%s] %s: N=%d, T=%d, %d repeat(s)", size, method, args.n, args.seq_len, repeats)
            spec = {**base, "method": method, "n": args.n, "seq_len": args.seq_len, "repeats": repeats,
                    "matrix_path": str(tmp / f"{size}_{method}.pt")}
            res = spawn(spec, args.threads)
            entry["rows"][method] = res
        loop_path = tmp / f"{size}_loop.pt"
        if loop_path.exists():
            ref = torch.load(loop_path)
            for method in ("ghost", "opacus"):
                path = tmp / f"{size}_{method}.pt"
                row = entry["rows"].get(method, {})
                if path.exists() and "error" not in row and not row.get("extrapolated"):
                    mat = torch.load(path)
                    row["rel_fro_vs_loop"], row["max_rel_vs_loop"] = rel_fro(mat, ref), max_rel(mat, ref)
        for path in tmp.glob(f"{size}_*.pt"):
            path.unlink()
    shutil.rmtree(tmp, ignore_errors=True)
    return report


def table(report: dict) -> str:
    """One Markdown table of every configuration, ratios against the floor side by side."""
    cols = ["model", "params", "method", "time s", "x floor", "CPU s", "x floor", "peak GiB", "x floor",
            "+call GiB", "err vs loop (check)", "err vs loop (timed)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for size, entry in report["sizes"].items():
        rows, check = entry["rows"], entry.get("check", {})
        floor = rows.get("floor", {})
        if entry.get("skipped") or "error" in check:
            reason = entry.get("skipped") or check["error"]
            lines.append(f"| {size} | {entry['params'] / 1e6:.1f}M | not timed: {reason[:80]} |" + " |" * (len(cols) - 3))
        for method in METHODS:
            r = rows.get(method)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {size} | {entry['params'] / 1e6:.1f}M | {method} | failed: {r['error'][:60]} |"
                             + " |" * (len(cols) - 4))
                continue
            mark = "~" if r.get("extrapolated") else ""

            def ratio(key: str, r: dict = r) -> str:
                if not floor.get(key) or not r.get(key):
                    return "n/a"
                return f"{mark}{r[key] / floor[key]:.2f}"

            def num(key: str, fmt: str, scale: float = 1.0, r: dict = r) -> str:
                return "n/a" if r.get(key) is None else mark + format(r[key] / scale, fmt)

            err_c = check.get("errors", {}).get(method)
            err_t = r.get("rel_fro_vs_loop")
            cells = [size, f"{entry['params'] / 1e6:.1f}M", method,
                     num("seconds", ".3g"), ratio("seconds"), num("cpu_seconds", ".3g"), ratio("cpu_seconds"),
                     num("peak_bytes", ".2f", 2**30), ratio("peak_bytes"), num("call_bytes", ".2f", 2**30),
                     "" if err_c is None else f"{err_c:.1e}", "" if err_t is None else f"{err_t:.1e}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tiny, small), N = 4, T = 32: seconds")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=None)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--n", type=int, default=8, help="probe instances N")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=None, help="default: 3, or 1 above 500M parameters on CPU")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--no-opacus", action="store_true")
    parser.add_argument("--mem-budget-gb", type=float, default=None,
                        help="memory a configuration may use (default: 80%% of MemAvailable, 85%% of the GPU)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest relative Frobenius error accepted in the check (default 1e-3, bf16 2e-2)")
    parser.add_argument("--tag", default=None, help="suffix of the result files (default: from the options)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.sizes = args.sizes or ["tiny", "small"]
        args.n, args.seq_len = min(args.n, 4), min(args.seq_len, 32)
    args.sizes = args.sizes or ["50M", "200M", "1B"]
    args.tolerance = args.tolerance or (2e-2 if args.dtype == "bfloat16" else 1e-3)
    t0 = time.perf_counter()
    report = run(args)
    report["total_seconds"] = time.perf_counter() - t0
    md = table(report)
    tag = args.tag or "_".join(filter(None, ["quick" if args.quick else None,
                                             None if args.device == "cpu" else args.device.split(":")[0],
                                             None if args.dtype == "float32" else args.dtype]))
    stem = RESULTS / ("bench_scale" + (f"_{tag}" if tag else ""))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    header = (f"N = {args.n} probe instances, T = {args.seq_len}, {args.dtype} on {args.device}, "
              f"{args.threads} threads, torch {torch.__version__}; '~' = extrapolated "
              "(Opacus: floor + N x params per-sample gradients, 4 bytes each in float32); errors: relative Frobenius "
              "vs the loop engine (check: N <= 4, T <= 64; timed: the full batch).\n\n")
    stem.with_suffix(".md").write_text(header + md + "\n")
    print(header + md)
    for size, entry in report["sizes"].items():
        rows = entry["rows"]
        if "floor" in rows and "ghost" in rows and "seconds" in rows["ghost"] and "seconds" in rows["floor"]:
            f, g = rows["floor"], rows["ghost"]
            print(f"{size}: ghost / floor = {g['seconds'] / f['seconds']:.2f} (time), "
                  f"{g['peak_bytes'] / f['peak_bytes']:.2f} (peak memory); target <= 1.3")
    print(f"total {report['total_seconds']:.0f} s; wrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")


if __name__ == "__main__":
    main()
