"""Cost of ``--track-geffect``: optimizer-step time with and without tracking.

Compares, on a randomly initialised model of the default recipe's size (Llama, d=192, 4 layers,
vocab from a tokenizer trained on the embedded data) and the embedded forget10 split:

- step time without tracking (objective forward + backward + AdamW step),
- step time with G-effect tracking at every step (probes: 16 forget + 16 retain rows),
- one plain forward + backward of the mean answer NLL on the same 32 probe rows.

Target: tracking overhead (with - without) <= 1.5 × the plain forward + backward of the probes.

    python benchmarks/bench_tracking.py [--steps 6] [--method satimp] [--hidden 192 --layers 4]
"""
from __future__ import annotations

import argparse
import copy
import logging
import statistics
import tempfile
import time

import torch
from transformers import TrainerCallback

from geffect import answer_nll, model_logits
from unlearning.config import UnlearningArguments
from unlearning.data import QADataset, load_split, retain_split_for
from unlearning.hooks import build_probes
from unlearning.models import DefaultRecipe, build_model, train_tokenizer
from unlearning.train import run_unlearning

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--method", default="satimp")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--probe-size", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    opts = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("transformers").setLevel(logging.WARNING)
    torch.set_num_threads(opts.threads)

    forget_rows = load_split("embedded", "forget10")
    retain_rows = load_split("embedded", retain_split_for("forget10"))
    texts = [f"{r['question']} {r['answer']}" for r in list(forget_rows) + list(retain_rows)]
    tokenizer = train_tokenizer(texts, vocab_size=3072)
    recipe = DefaultRecipe(hidden_size=opts.hidden, num_layers=opts.layers, max_length=256)
    base = build_model(tokenizer, recipe)
    n_params = sum(p.numel() for p in base.parameters())

    # plain forward + backward of the probe sets (what one G-effect evaluation must at least cost)
    probes = build_probes(QADataset(forget_rows, tokenizer, max_length=256), QADataset(retain_rows, tokenizer, max_length=256),
                          opts.probe_size, tokenizer.pad_token_id)
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

    results = {}
    for track in (False, True):
        with tempfile.TemporaryDirectory() as out:
            args = UnlearningArguments(
                output_dir=out, method=opts.method, max_steps=opts.steps, per_device_train_batch_size=opts.batch_size,
                learning_rate=1e-4, warmup_steps=0, save_strategy="no", track_geffect=track, geffect_every=1,
                geffect_probe_size=opts.probe_size, log_token_weights=False, max_length=256, use_cpu=True,
                disable_tqdm=True, logging_steps=1000,
            )
            timer = StepTimer()
            run_unlearning(args, model=copy.deepcopy(base), tokenizer=tokenizer, callbacks=[timer])
            results[track] = _median_after_warmup(timer.times)

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
    logger.info("tracking overhead / plain probe fwd+bwd = %.2fx (target <= 1.5x): %s",
                ratio, "OK" if ratio <= 1.5 else "ABOVE TARGET")


if __name__ == "__main__":
    main()
