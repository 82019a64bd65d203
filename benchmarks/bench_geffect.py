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

and the **floor**: one plain forward + backward of the same batch (sum of the per-instance
risks, parameter gradients accumulated), i.e. the cost of the training step the analysis
piggybacks on. Every engine is first checked against ``loop`` (max relative error per entry).

Memory: peak resident-set-size increase over the RSS just before the call, sampled every
millisecond from /proc/self/statm in a background thread, after ``malloc_trim(0)`` so that
memory freed by earlier measurements is returned to the OS first. Shared machines make both
numbers noisy: run on an idle machine for the record.

    python benchmarks/bench_geffect.py --quick     # tiny model, N = 8, 32 (a minute or two)
    python benchmarks/bench_geffect.py             # tiny + ~100M-parameter Llama, N = 8, 32, 128
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from geffect import per_instance_dots
from geffect.effect import flat_gradient
from geffect.engine import model_logits
from geffect.losses import IGNORE_INDEX, answer_nll

logger = logging.getLogger("bench_geffect")

CONFIGS = {
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=688, vocab_size=4096),
    "100M": dict(hidden_size=768, num_hidden_layers=10, num_attention_heads=12, intermediate_size=2048, vocab_size=16000),
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = LlamaConfig(**CONFIGS[name], max_position_embeddings=256, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).float().eval()


def make_batch(vocab: int, n: int, seq_len: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded batch: prompts of 16 tokens masked, lengths between seq_len/2 and seq_len."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (n, seq_len), generator=g)  # (N, T)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (n,), generator=g)  # (N,)
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).long()  # (N, T)
    ids = ids * mask
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[:, :16] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class PeakRSS:
    """Peak RSS increase (bytes) over the RSS at entry, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 1e-3) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # pragma: no cover - non-glibc
            pass
        self.start = self._rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self.peak = max(self.peak, self._rss())
        self._stop.set()
        self._thread.join()

    @property
    def delta(self) -> int:
        return self.peak - self.start


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


def timed(fn, repeats: int):
    times, peaks, out = [], [], None
    for _ in range(repeats):
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        peaks.append(mem.delta)
    return statistics.median(times), max(peaks), out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.double()
    floor = float(b.abs().max()) * 1e-6  # float32 engines: entries near 0 measured against the scale
    return float(((a.double() - b).abs() / b.abs().clamp_min(floor)).max())


def run(model_name: str, sizes: list[int], seq_len: int, repeats: int, captum_max: int, func_max: int, loop_max: int):
    model = build(model_name)
    n_params = sum(p.numel() for p in model.parameters())
    vocab = model.config.vocab_size
    test = make_batch(vocab, 1, seq_len, seed=99)
    direction = flat_gradient(model, lambda m: answer_nll(model_logits(m, test["input_ids"], test["attention_mask"]), test["labels"]).mean())
    rows = []

    # correctness first, at the smallest N
    check = make_batch(vocab, sizes[0], seq_len)
    ref = per_instance_dots(model, check, direction, engine="loop")
    errors = {
        "ghost": rel_err(per_instance_dots(model, check, direction, engine="ghost"), ref),
        "func": rel_err(per_instance_dots(model, check, direction, engine="func"), ref),
    }
    try:  # captum: direction = grad of the test instance's risk, totals only
        check_t = {k: torch.cat([v, test[k]]) for k, v in check.items()}
        cap = captum_totals(model, check_t, test_index=sizes[0])[: sizes[0]]
        errors["captum"] = rel_err(cap, ref.sum(1))
    except Exception as exc:  # noqa: BLE001 - report, do not hide
        logger.warning("captum TracInCP failed: %r", exc)
        errors["captum"] = float("nan")
    print(f"\n[{model_name}: {n_params / 1e6:.1f}M parameters, seq len {seq_len}] max relative error vs loop at N={sizes[0]}: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))

    # warm-up
    per_instance_dots(model, check, direction)
    floor_step(model, check, direction)
    for n in sizes:
        batch = make_batch(vocab, n, seq_len, seed=n)
        methods = {
            "floor": lambda: floor_step(model, batch, direction),
            "ghost": lambda: per_instance_dots(model, batch, direction, engine="ghost"),
        }
        if n <= loop_max:
            methods["loop"] = lambda: per_instance_dots(model, batch, direction, engine="loop")
        if n <= func_max:
            methods["func"] = lambda: per_instance_dots(model, batch, direction, engine="func")
        if n <= captum_max:
            bt = {k: torch.cat([v, test[k]]) for k, v in batch.items()}
            methods["captum"] = lambda: captum_totals(model, bt, test_index=n)
        results = {}
        for name, fn in methods.items():
            t, m, _ = timed(fn, repeats if name in ("floor", "ghost") else 1)
            results[name] = (t, m)
        ft, fm = results["floor"]
        for name, (t, m) in results.items():
            rows.append((model_name, n, name, t, t / ft, m / 2**20, m / fm if fm > 0 else float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, N = 8 and 32, one repeat")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        plan = [("tiny", [8, 32], 1, 8, 32, 32)]
    else:
        plan = [("tiny", [8, 32, 128], args.repeats, 8, 128, 128), ("100M", [8, 32, 128], args.repeats, 8, 32, 128)]
    rows = []
    for name, sizes, repeats, captum_max, func_max, loop_max in plan:
        rows += run(name, sizes, args.seq_len, repeats, captum_max, func_max, loop_max)

    print(f"\n{'model':6} {'N':>4} {'method':7} {'time s':>8} {'x floor':>8} {'peak MB':>8} {'x floor':>8}")
    for model_name, n, name, t, tr, m, mr in rows:
        print(f"{model_name:6} {n:>4} {name:7} {t:8.3f} {tr:8.2f} {m:8.1f} {mr:8.2f}")
    print("\nLinearity (ghost time per instance, ms) and targets:")
    for model_name in dict.fromkeys(r[0] for r in rows):
        ghost = {n: t for m_, n, name, t, *_ in rows if m_ == model_name and name == "ghost"}
        loop = {n: t for m_, n, name, t, *_ in rows if m_ == model_name and name == "loop"}
        per = ", ".join(f"N={n}: {1e3 * t / n:.1f}" for n, t in ghost.items())
        speedup = f"{loop[32] / ghost[32]:.1f}x" if 32 in loop and 32 in ghost else "n/a"
        print(f"  {model_name}: {per}; ghost vs loop at N=32: {speedup} (target >= 2x); "
              "ghost/floor time target <= 1.5, peak memory target <= 1.5")
    print("captum TracInCP runs only at the smallest N (one backward per example, no groups); "
          "func only up to the N shown (per-sample full gradients, chunks of 4).")


if __name__ == "__main__":
    main()
