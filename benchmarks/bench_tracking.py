"""Cost of ``--track-geffect``: optimizer-step time with and without tracking.

Compares, on a randomly initialised model of the default recipe's size (Llama, d=192, 4 layers,
vocab from a tokenizer trained on the embedded data) and the embedded forget10 split:

- step time without tracking (objective forward + backward + AdamW step),
- step time with G-effect tracking at every step (probes: 16 forget + 16 retain rows),
- one plain forward + backward of the mean answer NLL on the same 32 probe rows.

Target: tracking overhead (with - without) <= 1.5 × the plain forward + backward of the probes.

Before timing, two short runs (with and without tracking, same seed) must end with bit-identical
weights: tracking only reads gradients, it must never change the training trajectory. The timed
runs are checked the same way, and the table prints the largest weight difference.

    python benchmarks/bench_tracking.py [--steps 6] [--method satimp] [--hidden 192 --layers 4]
    python benchmarks/bench_tracking.py --quick      # d=64, 2 layers, 3 steps, 4 probe rows: seconds
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from geffect import answer_nll, model_logits
from unlearning.data import QADataset, load_split, probe_batches, retain_split_for
from unlearning.models import DefaultRecipe, build_model, train_tokenizer
from unlearning.training import UnlearningArguments, run_unlearning

logger = logging.getLogger("bench_tracking")


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (on_step_begin -> on_step_end)."""

    def __init__(self):
        self.times: list[float] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)


def _median_after_warmup(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 2 else times)


def max_weight_difference(a, b) -> float:
    """Largest |a - b| over all parameters of two models of the same architecture."""
    pb = dict(b.named_parameters())
    return max(float((p.detach() - pb[n].detach()).abs().max()) for n, p in a.named_parameters())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--method", default="satimp")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--probe-size", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=3072)
    ap.add_argument("--quick", action="store_true", help="d=64, 2 layers, vocab 512, 3 steps, 4 probe rows, batch 2")
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.hidden, opts.layers, opts.vocab, opts.steps, opts.probe_size, opts.batch_size = 64, 2, 512, 3, 4, 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("transformers").setLevel(logging.WARNING)
    torch.set_num_threads(opts.threads)

    forget_rows = load_split("embedded", "forget10")
    retain_rows = load_split("embedded", retain_split_for("forget10"))
    texts = [f"{r['question']} {r['answer']}" for r in list(forget_rows) + list(retain_rows)]
    tokenizer = train_tokenizer(texts, vocab_size=opts.vocab)
    recipe = DefaultRecipe(hidden_size=opts.hidden, num_layers=opts.layers, max_length=256)
    base = build_model(tokenizer, recipe)
    n_params = sum(p.numel() for p in base.parameters())

    # plain forward + backward of the probe sets (what one G-effect evaluation must at least cost)
    probes = probe_batches({"forget": QADataset(forget_rows, tokenizer, max_length=256),
                            "retain": QADataset(retain_rows, tokenizer, max_length=256)},
                           size=opts.probe_size, pad_token_id=tokenizer.pad_token_id)
    model = copy.deepcopy(base).train()
    plain = []
    for _ in range(opts.steps):
        t0 = time.perf_counter()
        for batch in probes.values():
            logits = model_logits(model, batch["input_ids"], batch["attention_mask"])  # (B, T, V)
            answer_nll(logits, batch["labels"]).mean().backward()
        model.zero_grad(set_to_none=True)
        plain.append(time.perf_counter() - t0)
    t_plain = _median_after_warmup(plain)

    def train(track: bool, steps: int):
        with tempfile.TemporaryDirectory() as out:
            args = UnlearningArguments(
                output_dir=out, method=opts.method, max_steps=steps, per_device_train_batch_size=opts.batch_size,
                learning_rate=1e-4, warmup_steps=0, save_strategy="no", track_geffect=track, geffect_every=1,
                geffect_probe_size=opts.probe_size, log_token_weights=False, max_length=256, use_cpu=True,
                disable_tqdm=True, logging_steps=1000, seed=0,
            )
            timer = StepTimer()
            res = run_unlearning(args, model=copy.deepcopy(base), tokenizer=tokenizer, callbacks=[timer])
            return _median_after_warmup(timer.times), res.model

    # agreement first: tracking must not change what training does
    pre = max_weight_difference(train(False, 2)[1], train(True, 2)[1])
    if pre != 0.0:
        raise SystemExit(f"tracking changed the trained weights (max |diff| {pre:.3e} after 2 steps); nothing timed")
    results, models = {}, {}
    for track in (False, True):
        results[track], models[track] = train(track, opts.steps)
    diff = max_weight_difference(models[False], models[True])
    if diff != 0.0:
        raise SystemExit(f"tracking changed the trained weights (max |diff| {diff:.3e} after {opts.steps} steps)")

    overhead = results[True] - results[False]
    rows = [
        ("step without tracking", results[False]),
        ("step with tracking (every step)", results[True]),
        ("tracking overhead per step", overhead),
        (f"plain fwd+bwd, {2 * opts.probe_size} probe rows", t_plain),
    ]
    logger.info("model: %.2fM params (d=%d, %d layers), method %s, batch %d, %d threads, median of %d steps",
                n_params / 1e6, opts.hidden, opts.layers, opts.method, opts.batch_size, opts.threads, opts.steps - 1)
    logger.info("%-36s %10s", "measurement", "seconds")
    for name, t in rows:
        logger.info("%-36s %10.4f", name, t)
    ratio = overhead / t_plain
    logger.info("tracking overhead / plain probe fwd+bwd = %.2fx (target <= 1.5x): %s; weights with vs without "
                "tracking: max |diff| %.1e", ratio, "OK" if ratio <= 1.5 else "ABOVE TARGET", diff)
    return {"step": results[False], "step_tracked": results[True], "plain_probe_fwd_bwd": t_plain, "ratio": ratio,
            "max_weight_difference": diff}


if __name__ == "__main__":
    main()
