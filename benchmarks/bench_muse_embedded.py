"""Benchmark: can a small model memorise the embedded MUSE forget corpus on a CPU in about a minute?

Trains, from scratch with the default-model architecture (a Llama of ``DefaultRecipe``'s size
and a BPE tokenizer trained on the corpus), a *target* model on forget + retain1 + retain2 and
a *retain* model on retain1 + retain2, then evaluates both with ``evaluate_muse`` (the retain
model's Min-K% AUC is the PrivLeak reference). ``--with-qa`` adds the KnowMem QA pairs rendered
as text (``knowmem_training_texts``: forget + retain QA for the target, retain QA for the
retain model), so KnowMem is measurable on a from-scratch model. Prints one JSON line per
model with training time and the MUSE summary. Run::

    python benchmarks/bench_muse_embedded.py [--epochs 30] [--with-qa] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import torch

logger = logging.getLogger("bench_muse_embedded")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--packing", default="document", choices=("concat", "document"))
    p.add_argument("--with-qa", action="store_true")
    p.add_argument("--no-trailing-space", action="store_true", help="KnowMem prompts end with 'Answer:' (no space)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    from unlearning.data import TextChunkDataset, knowmem_training_texts, muse_texts
    from unlearning.evaluation import evaluate_muse
    from unlearning.models import fine_tune
    from unlearning.models import DefaultRecipe, build_model, train_tokenizer

    corpora = {s: muse_texts("embedded", s) for s in ("forget", "retain1", "retain2", "holdout")}
    qa_f = knowmem_training_texts("embedded", ("forget_qa", "forget_qa_icl")) if args.with_qa else []
    qa_r = knowmem_training_texts("embedded", ("retain_qa", "retain_qa_icl")) if args.with_qa else []
    recipe = DefaultRecipe(max_length=max(args.max_length, 256))
    tok = train_tokenizer([t for ts in corpora.values() for t in ts] + qa_f + qa_r, vocab_size=recipe.vocab_size)
    sets = {
        "target": corpora["forget"] + corpora["retain1"] + corpora["retain2"] + qa_f + qa_r,
        "retain": corpora["retain1"] + corpora["retain2"] + qa_r,
    }
    results = {}
    for name in ("retain", "target"):
        model = build_model(tok, recipe)
        data = TextChunkDataset(sets[name], tok, max_length=args.max_length, packing=args.packing)
        t0 = time.perf_counter()
        fit = fine_tune(model, tok, data, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, progress=False)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = evaluate_muse(model.eval(), tok, "embedded", retain_reference=results.get("retain"),
                            knowmem_trailing_space=not args.no_trailing_space)
        eval_s = time.perf_counter() - t0
        results[name] = res
        keys = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak", "privleak/auc", "privleak/auc_retain")
        print(json.dumps({
            "model": name, "params": sum(p.numel() for p in model.parameters()), "chunks": len(data),
            "tokens": data.num_tokens, "epochs": args.epochs, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
            "final_loss": round(fit["final_loss"], 4), **{k: round(float(res.summary[k]), 4) for k in keys},
        }))


if __name__ == "__main__":
    main()
