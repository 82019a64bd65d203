"""Benchmark: wall-clock of the default evaluation suite, its generation share, batched vs sequential generation.

Run::

    python -m benchmarks.bench_evaluate                 # default model (prepare_default_models, cached)
    python -m benchmarks.bench_evaluate --tiny --max-samples 40 --max-new-tokens 32
    python benchmarks/bench_evaluate.py --quick         # random-init default-size model, 8 items per set, seconds

Before timing, batched (left-padded) generation is checked against one-prompt-at-a-time
generation on a few prompts (identical text required), and the timed comparison asserts the
same on all of its prompts; the table prints the number of identical outputs beside the ratio.

Model: the project's default small Llama (``unlearning.models.prepare_default_models``; ``--tiny``
uses ``tiny_recipe()``); with ``--random-init`` (or if that module is unavailable) an untrained
Llama of the default recipe's size with a tokenizer trained on the data (the table says which). Prints a table; nothing is written.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import unlearning.evaluation.tofu as ev  # noqa: E402
from unlearning.metrics.generation import generate_answers  # noqa: E402

logger = logging.getLogger("bench_evaluate")


def _random_default(args):
    """The default recipe's architecture, random weights, tokenizer trained on the data (no fine-tuning)."""
    from unlearning.data import load_split
    from unlearning.models import DefaultRecipe, build_model, train_tokenizer

    recipe = DefaultRecipe()
    rows = load_split(args.data, "full")
    tok = train_tokenizer([r["question"] + " " + r["answer"] for r in rows], vocab_size=recipe.vocab_size)
    return build_model(tok, recipe).eval(), tok, "random-init Llama of the default recipe's size (untrained)", None


def _load(args):
    if args.random_init:
        return _random_default(args)
    try:
        from unlearning.models import load_model_and_tokenizer, prepare_default_models, tiny_recipe, tiny_source

        recipe = tiny_recipe() if args.tiny else None
        data = tiny_source(args.split) if args.tiny and args.data == "embedded" else args.data
        prepared = prepare_default_models(data, args.split, recipe=recipe, progress=False)
        model, tok = load_model_and_tokenizer(prepared.target)
        which = f"prepare_default_models({'tiny_recipe' if args.tiny else 'default recipe'}) target"
        return model.eval(), tok, which, (data.embedded if args.tiny and args.data == "embedded" else None)
    except ImportError:
        return _random_default(args)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="embedded")
    p.add_argument("--split", default="forget10")
    p.add_argument("--tiny", action="store_true", help="use the tiny recipe (fast)")
    p.add_argument("--random-init", action="store_true",
                   help="skip training: random weights in the default recipe's architecture (generation then runs to max_new_tokens)")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--gen-prompts", type=int, default=32, help="prompts for the batched-vs-sequential comparison")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a busy machine)")
    p.add_argument("--quick", action="store_true",
                   help="--random-init, 8 items per set, 16 new tokens, 8 prompts in the generation comparison")
    args = p.parse_args(argv)
    if args.quick:
        args.random_init = True
        args.max_samples = args.max_samples or 8
        args.max_new_tokens, args.gen_prompts = 16, 8
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    model, tok, which, data_config = _load(args)
    n_params = sum(p.numel() for p in model.parameters())
    from unlearning.data import get_template

    # agreement first: batched (left padding) and one-at-a-time generation give the same text
    sets = ev.load_eval_sets(args.data, args.split, subset=args.max_samples, data_config=data_config)
    pairs = [(r["question"], r["answer"]) for name, (_, rows) in sets.items() if name != "holdout" for r in rows]
    tf = ev._teacher_forced(model, tok, get_template(model), pairs[: args.gen_prompts],
                            batch_size=args.batch_size, max_length=512, eos_id=tok.eos_token_id, extras=False, mia=False, prompts=True)
    prompts = tf["prompt_ids"]
    few = prompts[: min(4, len(prompts))]
    pre_b = generate_answers(model, tok, few, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    pre_s = generate_answers(model, tok, few, max_new_tokens=args.max_new_tokens, batch_size=1)
    if pre_b != pre_s:
        raise SystemExit(f"batched and one-at-a-time generation differ before timing: {pre_b} vs {pre_s}")

    # time generation inside the suite by wrapping the function evaluate.py calls
    gen_time = [0.0]

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return generate_answers(*a, **k)
        finally:
            gen_time[0] += time.perf_counter() - t

    ev.generate_answers = timed
    t0 = time.perf_counter()
    res = ev.evaluate_model(model, tok, args.data, args.split, batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, subset=args.max_samples, progress=False,
                            data_config=data_config)
    total = time.perf_counter() - t0
    ev.generate_answers = generate_answers

    # batched (left padding) vs one prompt at a time: the same prompts (from all evaluated sets) and settings
    t = time.perf_counter()
    batched = generate_answers(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    single = generate_answers(model, tok, prompts, max_new_tokens=args.max_new_tokens, batch_size=1)
    t_single = time.perf_counter() - t
    same = sum(a == b for a, b in zip(batched, single))
    if same != len(prompts):
        raise SystemExit(f"batched and one-at-a-time generation differ on {len(prompts) - same} of {len(prompts)} prompts")

    sizes = ", ".join(f"{k}={v}" for k, v in res.summary["sets"].items())
    rows = [
        ("model", f"{which}, {n_params / 1e6:.2f}M params"),
        ("sets", sizes),
        ("max_new_tokens / batch", f"{args.max_new_tokens} / {args.batch_size}"),
        ("suite wall-clock", f"{total:.1f} s"),
        ("  of which generation", f"{gen_time[0]:.1f} s ({100 * gen_time[0] / total:.0f}%)"),
        (f"generate {len(prompts)} prompts batched", f"{t_batched:.2f} s"),
        (f"generate {len(prompts)} prompts one at a time", f"{t_single:.2f} s"),
        ("batched speed-up", f"{t_single / t_batched:.1f}x (identical outputs: {same}/{len(prompts)})"),
        ("device / threads", f"cpu / {torch.get_num_threads()}"),
    ]
    w = max(len(r[0]) for r in rows)
    print("\n".join(f"| {a:<{w}} | {b} |" for a, b in rows))  # the benchmark's output is the table
    return {"suite_seconds": total, "generation_seconds": gen_time[0], "batched_seconds": t_batched,
            "single_seconds": t_single, "identical": same, "prompts": len(prompts), "sets": res.summary["sets"]}


if __name__ == "__main__":
    main()
