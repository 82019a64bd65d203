"""Benchmark: cost of WAGLE weight attribution and of thresholding a large score set.

WAGLE (Jia et al., NeurIPS 2024) claims attribution costs one forward + backward pass over
the forget and the retain calibration samples. This script measures, on a random-init Llama:

1. time(attribute_weights(method="wagle")) / time(plain forward+backward of the same
   batches) -- target <= 1.2;
2. peak resident memory above the loaded model, in units of the model's float32 size, for
   the attribution and for the plain forward+backward (which itself holds one .grad copy) --
   target: attribution holds at most two float32 accumulators beyond the model (plus the
   activations the plain pass also needs);
3. weight_mask on N float32 scores split into 8 tensors (default N = 1e9, 4 GB; --quick
   uses 1e8 and extrapolates linearly): time and peak memory beyond scores + output masks,
   and, in quick mode, a concatenate + kthvalue reference for comparison.

Before anything is timed, a check worker verifies that the engines agree: the WAGLE scores of
``attribute_weights`` against |(θ − g_r/γ)·g_f| built from plain ``loss.backward()`` gradients
(max relative error printed, run stops above ``--max-error``), and ``weight_mask`` against a
concatenate + kthvalue threshold on 1e6 scores (exactly round(0.8 n) kept; the same weights
kept, except among scores tied with the threshold). Every timed thresholding run asserts its
kept count again.

Each measurement runs in a fresh subprocess; peak memory is sampled from /proc/self/statm
every millisecond. Run::

    python benchmarks/bench_attribution.py --smoke      # agreement checks + tiny timings, seconds
    python benchmarks/bench_attribution.py --quick      # about a minute
    python benchmarks/bench_attribution.py              # full sizes (needs ~6 GB free RAM)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from _common import PeakMemory  # noqa: E402

logger = logging.getLogger("bench_attribution")
# torch and the library are imported inside the worker functions only: each measurement runs in
# a fresh subprocess, and the driver process that launches them stays free of torch's memory.


def _model(size: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dims = {"smoke": dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, vocab_size=512),
            "quick": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, vocab_size=4096),
            "full": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, vocab_size=8192)}[size]
    torch.manual_seed(0)
    cfg = LlamaConfig(num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      tie_word_embeddings=False, **dims)
    return LlamaForCausalLM(cfg).eval()


def _batches(n: int, bsz: int, T: int, vocab: int, seed: int):
    import torch

    from geffect.losses import IGNORE_INDEX

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n // bsz):
        ids = torch.randint(0, vocab, (bsz, T), generator=g)
        labels = ids.clone()
        labels[:, : T // 4] = IGNORE_INDEX  # a prompt
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def worker_attribution(kind: str, size: str, samples: int, bsz: int, T: int) -> dict:
    import torch

    from geffect.attribution import attribute_weights
    from geffect.engine import model_logits
    from geffect.losses import answer_nll

    model = _model(size)
    vocab = model.config.vocab_size
    forget, retain = _batches(samples, bsz, T, vocab, 1), _batches(samples, bsz, T, vocab, 2)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # warm-up (allocator, kernels) on one batch, not timed
    answer_nll(model_logits(model, forget[0]["input_ids"], None), forget[0]["labels"]).sum().backward()
    model.zero_grad(set_to_none=True)
    with PeakMemory(trim=False) as mem:
        t0 = time.perf_counter()
        if kind == "fwd_bwd":
            for b in forget + retain:
                logits = model_logits(model, b["input_ids"], b["attention_mask"])  # (B, T, V)
                answer_nll(logits, b["labels"]).sum().backward()
        else:
            attribute_weights(model, forget, retain, method="wagle")
        seconds = time.perf_counter() - t0
    return {"kind": kind, "seconds": seconds, "peak_over_model": mem.delta / model_bytes,
            "model_mb": model_bytes / 2**20, "params": sum(p.numel() for p in model.parameters())}


def worker_timing(size: str, samples: int, bsz: int, T: int, reps: int, threads: int) -> dict:
    """Plain forward+backward versus attribution, interleaved batch by batch.

    The machine this runs on may be shared, so each calibration batch is timed once as a
    plain ``loss.backward()`` and once through the attribution's gradient accumulation,
    alternately, and both wall time and process CPU time are summed; then the complete
    ``attribute_weights`` call (which adds the score arithmetic) is timed as well.
    """
    import torch

    from geffect.attribution import accumulate_gradients, attribute_weights
    from geffect.engine import model_logits
    from geffect.losses import answer_nll

    torch.set_num_threads(threads)
    model = _model(size)
    vocab = model.config.vocab_size
    forget, retain = _batches(samples, bsz, T, vocab, 1), _batches(samples, bsz, T, vocab, 2)
    named = dict(model.named_parameters())
    acc = {n: torch.zeros_like(p) for n, p in named.items()}  # one persistent accumulator, as in a real pass
    answer_nll(model_logits(model, forget[0]["input_ids"], None), forget[0]["labels"]).sum().backward()
    wall = {"fwd_bwd": 0.0, "accumulate": 0.0}
    cpu = {"fwd_bwd": 0.0, "accumulate": 0.0}

    def timed(key, fn):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall[key] += time.perf_counter() - w
        cpu[key] += time.process_time() - c

    def plain(b):
        logits = model_logits(model, b["input_ids"], b["attention_mask"])  # (B, T, V)
        answer_nll(logits, b["labels"]).sum().backward()

    for _ in range(reps):
        for b in forget + retain:
            timed("fwd_bwd", lambda: plain(b))
            timed("accumulate", lambda: accumulate_gradients(model, named, [b], out=acc))
    w, c = time.perf_counter(), time.process_time()
    attribute_weights(model, forget, retain, method="wagle")
    full_wall, full_cpu = time.perf_counter() - w, time.process_time() - c
    return {"wall": wall, "cpu": cpu, "ratio_wall": wall["accumulate"] / wall["fwd_bwd"],
            "ratio_cpu": cpu["accumulate"] / cpu["fwd_bwd"], "reps": reps, "threads": threads,
            "attribute_weights_wall": full_wall, "attribute_weights_cpu": full_cpu,
            "fwd_bwd_cpu_per_pass": cpu["fwd_bwd"] / reps}


def worker_check(size: str, samples: int, bsz: int, T: int, gamma: float = 1e-2) -> dict:
    """Agreement of the engines, before any timing (see the module docstring)."""
    import torch

    from geffect.attribution import attribute_weights
    from geffect.losses import answer_nll
    from geffect.masking import kept_count, weight_mask

    model = _model(size)
    vocab = model.config.vocab_size
    forget, retain = _batches(samples, bsz, T, vocab, 1), _batches(samples, bsz, T, vocab, 2)
    scores = attribute_weights(model, forget, retain, method="wagle", gamma=gamma)

    def plain_grads(batches):  # the obvious way: .grad accumulated by loss.backward()
        model.zero_grad(set_to_none=True)
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            answer_nll(logits, b["labels"]).sum().backward()
        out = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return out

    g_f, g_r = plain_grads(forget), plain_grads(retain)
    worst = 0.0
    for n, p in model.named_parameters():
        ref = ((p.detach().double() - g_r[n].double() / gamma) * g_f[n].double()).abs()
        err = float((scores[n].double() - ref).abs().max()) / max(float(ref.abs().max()), 1e-30)
        worst = max(worst, err)

    g = torch.Generator().manual_seed(5)
    thr_scores = {f"t{i}": torch.rand(125_000, generator=g) for i in range(8)}  # 1e6 scores, with ties
    n = 1_000_000
    k = kept_count(0.8, n)
    mask = weight_mask(thr_scores, 0.8)
    flat = torch.cat([s.reshape(-1) for s in thr_scores.values()])
    thresh = torch.kthvalue(flat, n - k + 1).values  # the k-th largest score
    kept = sum(int(m.sum()) for m in mask.values())
    above_kept = all(bool(m[s > thresh].all()) for s, m in zip(thr_scores.values(), mask.values()))
    below_dropped = not any(bool(m[s < thresh].any()) for s, m in zip(thr_scores.values(), mask.values()))
    return {"wagle_max_rel_err": worst, "mask_kept": kept, "mask_expected": k,
            "mask_agrees": bool(kept == k and above_kept and below_dropped)}


def worker_threshold(kind: str, per_tensor: int, n_tensors: int) -> dict:
    import torch

    from geffect.masking import weight_mask

    g = torch.Generator().manual_seed(0)
    scores = {f"t{i}": torch.rand(per_tensor, generator=g) for i in range(n_tensors)}
    N = per_tensor * n_tensors
    with PeakMemory(trim=False) as mem:
        t0 = time.perf_counter()
        if kind == "radix":
            mask = weight_mask(scores, 0.8)
        else:  # reference: one concatenated copy + kthvalue
            flat = torch.cat([s.reshape(-1) for s in scores.values()])
            thresh = torch.kthvalue(flat, N - round(0.8 * N) + 1).values
            del flat
            mask = {n: s >= thresh for n, s in scores.items()}
        seconds = time.perf_counter() - t0
    kept = sum(int(m.sum()) for m in mask.values())
    return {"kind": kind, "elements": N, "seconds": seconds, "kept": kept,
            "extra_mb_beyond_scores_and_masks": (mem.delta - N) / 2**20,  # masks: 1 byte/element
            "scores_mb": 4 * N / 2**20}


IN_PROCESS = False  # --in-process: run the workers in this process (fast smoke runs; memory numbers less clean)


def _dispatch(worker: list[str]) -> dict:
    fn, rest = worker[0], worker[1:]
    if fn == "attr":
        return worker_attribution(rest[0], rest[1], *map(int, rest[2:]))
    if fn == "check":
        return worker_check(rest[0], *map(int, rest[1:]))
    if fn == "time":
        return worker_timing(rest[0], *map(int, rest[1:]))
    return worker_threshold(rest[0], int(rest[1]), int(rest[2]))


def _spawn(args: list[str], env: dict | None = None) -> dict:
    if IN_PROCESS:
        return _dispatch(args)
    out = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True,
                         check=False, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small model, 1e8 scores (extrapolated to 1e9)")
    mode.add_argument("--smoke", action="store_true", help="tiny model, 4 samples, 1e6 scores: the checks and one timing each")
    p.add_argument("--max-error", type=float, default=1e-4,
                   help="largest max relative error of the WAGLE scores vs the plain-gradient formula (float32)")
    p.add_argument("--samples", type=int, default=None, help="forget (= retain) calibration samples")
    p.add_argument("--batch-size", type=int, default=1, help="1 = the official batch-size-1 pass")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sample (64 quick, 128 full)")
    p.add_argument("--reps", type=int, default=None, help="interleaved timing repetitions (2 quick, 3 full)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the timing")
    p.add_argument("--elements", type=float, default=None, help="score-set size for thresholding")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--in-process", action="store_true",
                   help="run every measurement in this process instead of a fresh one (faster; memory numbers less clean)")
    p.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        res = _dispatch(args.worker)
        print(json.dumps(res))
        return res
    global IN_PROCESS
    IN_PROCESS = args.in_process
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    samples = args.samples or {"smoke": 4, "quick": 8, "full": 64}[size]
    T = args.seq_len or {"smoke": 32, "quick": 64, "full": 128}[size]
    reps = args.reps or {"smoke": 1, "quick": 2, "full": 3}[size]
    results = {"size": size, "samples": samples, "batch_size": args.batch_size, "seq_len": T}
    common = [size, str(samples), str(args.batch_size), str(T)]

    check = _spawn(["check", *common])  # the engines must agree before anything is timed
    results["check"] = check
    logger.info("agreement: WAGLE scores vs plain-gradient formula max rel err %.1e (limit %g); weight_mask kept "
                "%d of 1e6 (expected %d), same weights as cat+kthvalue: %s", check["wagle_max_rel_err"],
                args.max_error, check["mask_kept"], check["mask_expected"], check["mask_agrees"])
    if not (check["wagle_max_rel_err"] <= args.max_error and check["mask_agrees"]):
        raise SystemExit(f"engines disagree, nothing timed: {check}")

    timing = _spawn(["time", *common, str(reps), str(args.threads)])
    base = _spawn(["attr", "fwd_bwd", *common])  # memory: one fresh process per measurement
    attr = _spawn(["attr", "wagle", *common])
    results.update(model={"params": attr["params"], "float32_mb": round(attr["model_mb"], 1)},
                   timing=timing, memory={"fwd_bwd": base, "wagle": attr}, time_ratio=timing["ratio_cpu"])
    logger.info("model %.1f M params (%.0f MB); %d forget + %d retain samples, batch %d, T=%d, %d threads",
                attr["params"] / 1e6, attr["model_mb"], samples, samples, args.batch_size, T, timing["threads"])
    logger.info("per pass, interleaved x%d: plain fwd+bwd %.2f s CPU (%.2f s wall); attribution %.2f s CPU (%.2f s wall)",
                reps, timing["cpu"]["fwd_bwd"], timing["wall"]["fwd_bwd"], timing["cpu"]["accumulate"],
                timing["wall"]["accumulate"])
    logger.info("time ratio attribution / fwd+bwd = %.2f CPU, %.2f wall (target <= 1.2); whole "
                "attribute_weights call %.2f s CPU vs one plain pass %.2f s CPU",
                timing["ratio_cpu"], timing["ratio_wall"], timing["attribute_weights_cpu"],
                timing["fwd_bwd_cpu_per_pass"])
    logger.info("peak memory above model: plain fwd+bwd %.2f x model, wagle %.2f x model; difference %.2f x "
                "(the plain pass holds one .grad copy, wagle two float32 accumulators)",
                base["peak_over_model"], attr["peak_over_model"], attr["peak_over_model"] - base["peak_over_model"])

    target = 1e9
    n = int(args.elements or {"smoke": 1e6, "quick": 1e8, "full": target}[size])
    per = n // 8
    radix = _spawn(["thr", "radix", str(per), "8"])
    if radix["kept"] != round(0.8 * radix["elements"]):
        raise SystemExit(f"weight_mask kept {radix['kept']} of {radix['elements']}, expected round(0.8 n)")
    # glibc keeps freed chunk temporaries in its heap (dynamic mmap threshold), which inflates
    # RSS by an allocator-dependent amount; a fixed threshold returns them, showing the
    # algorithm's own working set
    radix_ws = _spawn(["thr", "radix", str(per), "8"], env={"MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    scale = target / radix["elements"]
    radix["extrapolated_seconds_1e9"] = radix["seconds"] * scale
    radix["working_set_mb_fixed_mmap_threshold"] = radix_ws["extra_mb_beyond_scores_and_masks"]
    results["threshold"] = radix
    logger.info("weight_mask on %.2g scores (8 tensors): %.2f s; RSS beyond scores+masks %.0f MB with default "
                "malloc, %.0f MB with MALLOC_MMAP_THRESHOLD_=1MiB (scores %.0f MB)%s", radix["elements"],
                radix["seconds"], radix["extra_mb_beyond_scores_and_masks"], radix_ws["extra_mb_beyond_scores_and_masks"],
                radix["scores_mb"],
                f"; linear extrapolation to 1e9: {radix['extrapolated_seconds_1e9']:.1f} s" if scale != 1 else "")
    if args.quick or args.smoke:
        ref = _spawn(["thr", "concat_kthvalue", str(per), "8"])
        results["threshold_reference"] = ref
        if ref["kept"] < radix["kept"]:  # the reference keeps every score tied with the threshold
            raise SystemExit(f"reference threshold kept {ref['kept']} < {radix['kept']}")
        logger.info("reference cat+kthvalue      : %.2f s, %.0f MB beyond scores+masks; kept %d vs %d (ties at "
                    "the threshold all kept by the reference)", ref["seconds"], ref["extra_mb_beyond_scores_and_masks"],
                    ref["kept"], radix["kept"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
