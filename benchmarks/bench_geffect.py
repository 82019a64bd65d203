"""Speed and memory of the G-effect engines against one plain training step.

Computes the same matrix ``E[i, g] = <grad_g R(x_i), d_g>`` (Wang et al., ICLR 2025,
Definition 1 per instance and per layer) with

- ``ghost``  : geffect's default engine (one forward + one backward, per-layer hook rules),
- ``loop``   : the reference, one forward + backward per instance,
- ``func``   : torch.func vmap(grad) per-sample full gradients (chunks of 4 instances),
- ``captum`` : captum's TracInCP with one "checkpoint" (the current model), learning rate 1,
               train set = the probe instances, test example = the instance whose gradient
               is the direction; it computes per-example gradients one backward at a time,
               so it only runs at the smallest N (row totals only: it has no groups),
- ``opacus`` : Opacus' ``GradSampleModule`` (per-sample gradients from its layer hooks, one
               forward + backward, N full gradient copies in memory), then each per-sample
               gradient dotted with the direction per group: the standard way to get this
               matrix from an existing library (optional: ``pip install -e ".[bench]"``),

and the **floor**: one plain forward + backward of the same batch (sum of the per-instance
risks, parameter gradients accumulated), i.e. the cost of the training step the analysis
piggybacks on. Before anything is timed every engine is checked against ``loop`` at the
smallest N (max relative error per entry; the run stops if one exceeds ``--max-error``), and
every timed row prints its own error against the reference of that N (``loop`` where it ran,
else ``ghost``), so a ratio is never shown without the agreement it was measured at.

Memory: peak resident-set-size increase over the RSS just before the call, sampled every
millisecond from /proc/self/statm in a background thread, after ``malloc_trim(0)`` so that
memory freed by earlier measurements is returned to the OS first. Shared machines make both
numbers noisy: run on an idle machine for the record.

    python benchmarks/bench_geffect.py --quick     # tiny model, N = 8, 32 (a minute or two)
    python benchmarks/bench_geffect.py --smoke     # tiny model, N = 4, seq len 32: the agreement checks only, seconds
    python benchmarks/bench_geffect.py             # tiny + ~100M-parameter Llama, N = 8, 32, 128
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks' shared helpers
from _common import PeakMemory, make_batch  # noqa: E402

from geffect import parameter_groups, per_instance_dots
from geffect.effect import flat_gradient
from geffect.engine import model_logits
from geffect.losses import answer_nll

try:  # benchmark-only dependency (the "bench" extra)
    from opacus import GradSampleModule
except ImportError:  # pragma: no cover - depends on the environment
    GradSampleModule = None

logger = logging.getLogger("bench_geffect")

CONFIGS = {
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=688, vocab_size=4096),
    "100M": dict(hidden_size=768, num_hidden_layers=10, num_attention_heads=12, intermediate_size=2048, vocab_size=16000),
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = LlamaConfig(**CONFIGS[name], max_position_embeddings=256, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).float().eval()


def floor_step(model, batch, direction):
    """One plain forward + backward (parameter gradients accumulated), then cleared."""
    logits = model_logits(model, batch["input_ids"], batch["attention_mask"])  # (N, T, V)
    answer_nll(logits, batch["labels"]).sum().backward()
    model.zero_grad(set_to_none=True)


def captum_totals(model, batch, test_index: int) -> torch.Tensor:
    """Row totals <grad R(x_i), grad R(x_test)> with captum TracInCP (one checkpoint, lr 1)."""
    from captum.influence import TracInCP  # heavy; only the captum comparison needs it

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return model_logits(self.inner, input_ids, attention_mask)

    data = torch.utils.data.TensorDataset(batch["input_ids"], batch["attention_mask"], batch["labels"])
    tracin = TracInCP(
        Wrapped(model),
        torch.utils.data.DataLoader(data, batch_size=len(data)),
        checkpoints=["current"],
        checkpoints_load_func=lambda m, path: 1.0,
        loss_fn=answer_nll,  # no `reduction` attribute: per-example losses
        batch_size=len(data),
        sample_wise_grads_per_batch=False,
    )
    t = test_index
    scores = tracin.influence(
        (batch["input_ids"][t : t + 1], batch["attention_mask"][t : t + 1], batch["labels"][t : t + 1])
    )  # (1, N)
    return scores[0]


def opacus_matrix(model, batch, direction, groups) -> torch.Tensor:
    """E[i, g] = sum_{p in g} <per-sample grad_p R(x_i), d_p> from Opacus' per-sample gradients.

    Opacus records activations only in training mode; these Llama configs have no dropout, so
    train mode computes the same function as eval mode. Hooks and ``grad_sample`` tensors are
    removed afterwards and the model's mode is restored.
    """
    if GradSampleModule is None:
        raise RuntimeError("opacus is not installed: pip install -e '.[bench]' (or pip install opacus)")
    was_training = model.training
    model.train()
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    try:
        logits = gsm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (N, T, V)
        with warnings.catch_warnings():  # torch notes that the first module's inputs (token ids) need no grad
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            answer_nll(logits, batch["labels"]).sum().backward()  # sum of the per-instance risks
        n = batch["input_ids"].shape[0]
        named = dict(model.named_parameters())
        out = torch.zeros(n, len(groups), dtype=torch.float64)
        for g, names in enumerate(groups.values()):
            for name in names:
                if name in direction:
                    gs = named[name].grad_sample  # (N, *param shape)
                    out[:, g] += (gs.reshape(n, -1) @ direction[name].reshape(-1)).double()
        return out
    finally:
        gsm._close()  # removes the hooks and the grad_sample attributes
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def timed(fn, repeats: int):
    times, peaks, out = [], [], None
    for _ in range(repeats):
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        peaks.append(mem.delta)
    return statistics.median(times), max(peaks), out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    floor = float(b.abs().max()) * 1e-6  # float32 engines: entries near 0 measured against the scale
    return float(((a.double() - b).abs() / b.abs().clamp_min(floor)).max())


def run(model_name: str, sizes: list[int], seq_len: int, repeats: int, limits: dict[str, int], max_error: float):
    """Rows (model, N, method, seconds, x floor, peak MB, x floor, error vs reference, reference) for each N."""
    model = build(model_name)
    n_params = sum(p.numel() for p in model.parameters())
    vocab = model.config.vocab_size
    groups = parameter_groups(model)
    test = make_batch(vocab, 1, seq_len, seed=99)
    direction = flat_gradient(model, lambda m: answer_nll(model_logits(m, test["input_ids"], test["attention_mask"]), test["labels"]).mean())
    use_opacus = GradSampleModule is not None and limits["opacus"] > 0
    if GradSampleModule is None:
        logger.warning("opacus is not installed: no Opacus rows (pip install -e '.[bench]')")

    def with_test(batch):  # captum: the test instance appended as the last row
        return {k: torch.cat([v, test[k]]) for k, v in batch.items()}

    # 1. agreement first, at the smallest N, before anything is timed
    n0 = sizes[0]
    check = make_batch(vocab, n0, seq_len)
    ref = per_instance_dots(model, check, direction, engine="loop")
    errors = {
        "ghost": rel_err(per_instance_dots(model, check, direction, engine="ghost"), ref),
        "func": rel_err(per_instance_dots(model, check, direction, engine="func"), ref),
        "captum": rel_err(captum_totals(model, with_test(check), test_index=n0)[:n0], ref.sum(1)),
    }
    if use_opacus:
        errors["opacus"] = rel_err(opacus_matrix(model, check, direction, groups), ref)
    print(f"\n[{model_name}: {n_params / 1e6:.1f}M parameters, seq len {seq_len}] max relative error vs loop at N={n0}: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    bad = {k: v for k, v in errors.items() if not v <= max_error}
    if bad:
        raise SystemExit(f"engines disagree with the loop reference beyond {max_error:g}: {bad}; nothing timed")

    # 2. timing; every row also reports its own error against this N's reference
    per_instance_dots(model, check, direction)  # warm-up
    floor_step(model, check, direction)
    rows = []
    for n in sizes:
        batch = make_batch(vocab, n, seq_len, seed=n)
        methods = {
            "floor": lambda: floor_step(model, batch, direction),
            "ghost": lambda: per_instance_dots(model, batch, direction, engine="ghost"),
        }
        if n <= limits["loop"]:
            methods["loop"] = lambda: per_instance_dots(model, batch, direction, engine="loop")
        if n <= limits["func"]:
            methods["func"] = lambda: per_instance_dots(model, batch, direction, engine="func")
        if use_opacus and n <= limits["opacus"]:
            methods["opacus"] = lambda: opacus_matrix(model, batch, direction, groups)
        if n <= limits["captum"]:
            bt = with_test(batch)
            methods["captum"] = lambda: captum_totals(model, bt, test_index=n)[:n]
        results = {}
        for name, fn in methods.items():
            results[name] = timed(fn, repeats if name in ("floor", "ghost", "opacus") else 1)
        ref_name = "loop" if "loop" in results else "ghost"
        ref_out = results[ref_name][2]
        ft, fm, _ = results["floor"]
        for name, (t, m, out) in results.items():
            if name == "floor" or name == ref_name:
                err = float("nan") if name == "floor" else 0.0
            else:
                err = rel_err(out, ref_out.sum(1) if name == "captum" else ref_out)
                if not err <= max_error:
                    raise SystemExit(f"{model_name} N={n}: {name} disagrees with {ref_name} by {err:.1e} > {max_error:g}")
            rows.append((model_name, n, name, t, t / ft, m / 2**20, m / fm if fm > 0 else float("nan"), err, ref_name))
    return rows


PLANS = {
    # name: [(model, sizes, repeats, limits)]; limits = the largest N at which each optional engine runs
    "smoke": [("tiny", [4], 1, dict(captum=4, func=4, loop=4, opacus=4))],
    "quick": [("tiny", [8, 32], 1, dict(captum=8, func=32, loop=32, opacus=32))],
    "full": [("tiny", [8, 32, 128], 3, dict(captum=8, func=128, loop=128, opacus=32)),
             ("100M", [8, 32, 128], 3, dict(captum=8, func=32, loop=128, opacus=8))],
}


def main(argv=None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny model, N = 8 and 32, one repeat")
    mode.add_argument("--smoke", action="store_true", help="tiny model, N = 4, seq len 32: agreement checks and one timing")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per instance (default 64; 32 with --smoke)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats of floor / ghost / opacus (median; default 1 with --quick/--smoke, else 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--max-error", type=float, default=1e-3,
                        help="largest max relative error per entry accepted vs the reference (float32 models)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    seq_len = args.seq_len or (32 if args.smoke else 64)
    rows = []
    for name, sizes, repeats, limits in plan:
        rows += run(name, sizes, seq_len, repeats if args.repeats is None else args.repeats, limits, args.max_error)

    print(f"\n{'model':6} {'N':>4} {'method':7} {'time s':>8} {'x floor':>8} {'peak MB':>8} {'x floor':>8} {'max rel err':>12}")
    for model_name, n, name, t, tr, m, mr, err, ref_name in rows:
        e = "" if name == "floor" else ("(reference)" if name == ref_name else f"{err:.1e} vs {ref_name}")
        print(f"{model_name:6} {n:>4} {name:7} {t:8.3f} {tr:8.2f} {m:8.1f} {mr:8.2f} {e:>12}")
    print("\nLinearity (ghost time per instance, ms) and targets:")
    for model_name in dict.fromkeys(r[0] for r in rows):
        ghost = {n: t for m_, n, name, t, *_ in rows if m_ == model_name and name == "ghost"}
        loop = {n: t for m_, n, name, t, *_ in rows if m_ == model_name and name == "loop"}
        per = ", ".join(f"N={n}: {1e3 * t / n:.1f}" for n, t in ghost.items())
        speedup = f"{loop[32] / ghost[32]:.1f}x" if 32 in loop and 32 in ghost else "n/a"
        print(f"  {model_name}: {per}; ghost vs loop at N=32: {speedup} (target >= 2x); "
              "ghost/floor time target <= 1.5, peak memory target <= 1.5")
    opacus = [(r, g) for r in rows if r[2] == "opacus" for g in rows if g[:2] == r[:2] and g[2] == "ghost"]
    if opacus:
        print("\nOpacus (GradSampleModule per-sample gradients . direction) vs ghost, same run, same batches:")
        for r, g in opacus:
            mem = f"{r[5] / g[5]:.1f}x" if g[5] > 0 else "n/a"
            print(f"  {r[0]} N={r[1]}: time {r[3]:.3f} s vs {g[3]:.3f} s = {r[3] / g[3]:.1f}x; peak RSS increase "
                  f"{r[5]:.0f} MB vs {g[5]:.0f} MB = {mem}; G-effect matrix agreement {r[7]:.1e} (target: ghost >= 3x faster at N=32)")
    print("captum TracInCP runs only at the smallest N (one backward per example, no groups); "
          "func only up to the N shown (per-sample full gradients, chunks of 4).")
    return rows


if __name__ == "__main__":
    main()
