"""What weight-only quantization does to the default target model, and how large the target→retain
update is against each scheme's quantization step (Zhang et al., ICLR 2025).

For each scheme of :data:`unlearning.attacks.DEFAULT_SCHEMES`: the relative weight error
‖Q(θ) − θ‖_F / ‖θ‖_F of the quantized linear layers, and the change of the mean answer NLL
(:func:`geffect.losses.answer_nll`, each instance counted once) on the forget set and on a
retain sample, for the target and for the retain model (the stand-in for an unlearned model: it
never saw the forget set), with a paired 95% t-interval over the instances. Then the update-size
table (:func:`unlearning.attacks.update_size`) between the target and the retain model, per
parameter group and for the whole model.

    python benchmarks/quantize_default.py            # writes benchmarks/results/quantize_default.{json,md}

Runs on CPU in about a minute once the default models are cached (``prepare_default_models``).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from geffect.io import atomic_write_json, atomic_write_text  # noqa: E402
from geffect.losses import answer_nll  # noqa: E402
from unlearning.attacks import DEFAULT_SCHEMES, quantize_model, update_size  # noqa: E402
from unlearning.data import QACollator, QADataset, load_split  # noqa: E402
from unlearning.models import load_model_and_tokenizer, prepare_default_models  # noqa: E402

logger = logging.getLogger("quantize_default")
RESULTS = ROOT / "benchmarks" / "results"


@torch.no_grad()
def instance_nll(model, batches) -> np.ndarray:
    """Per-instance mean answer NLL over all batches, (N,) float64."""
    model.eval()
    out = []
    for batch in batches:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out.append(answer_nll(logits, batch["labels"]).double().numpy())
    return np.concatenate(out)


def paired_interval(diff: np.ndarray) -> tuple[float, float, float]:
    """Mean of a paired difference and its 95% t-interval."""
    from scipy import stats

    n = len(diff)
    m = float(diff.mean())
    half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return m, m - half, m + half


def make_batches(rows, tok, batch_size: int) -> list[dict]:
    ds = QADataset(rows, tok)
    collate = QACollator(tok.pad_token_id)
    return [collate([ds[i] for i in range(s, min(s + batch_size, len(ds)))]) for s in range(0, len(ds), batch_size)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schemes", nargs="+", default=list(DEFAULT_SCHEMES))
    ap.add_argument("--retain-rows", type=int, default=200, help="retain90 rows in the utility sample")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", type=Path, default=RESULTS / "quantize_default")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)

    paths = prepare_default_models()
    target, tok = load_model_and_tokenizer(paths.target)
    retain, _ = load_model_and_tokenizer(paths.retain)
    forget_rows = load_split("embedded", "forget10")
    retain_rows = load_split("embedded", "retain90").select(range(args.retain_rows))
    probes = {"forget": make_batches(forget_rows, tok, args.batch_size),
              "retain": make_batches(retain_rows, tok, args.batch_size)}
    base = {(m, p): instance_nll(model, probes[p]) for m, model in (("target", target), ("retain", retain))
            for p in probes}
    effect_rows, update_rows, timing = [], [], {}
    for name in args.schemes:
        t0 = time.perf_counter()
        qt = quantize_model(target, name)
        timing[name] = time.perf_counter() - t0
        qr = quantize_model(retain, name)
        for m, q in (("target", qt), ("retain", qr)):
            for p in probes:
                nll = instance_nll(q.model, probes[p])
                mean, lo, hi = paired_interval(nll - base[(m, p)])
                effect_rows.append({"scheme": name, "model": m, "probe": p, "n": len(nll),
                                    "rel_weight_error": q.relative_error(),
                                    "nll_before": float(base[(m, p)].mean()), "nll_after": float(nll.mean()),
                                    "delta": mean, "delta_lo": lo, "delta_hi": hi})
        table = update_size(target, retain, name)
        update_rows += table[table.level != "module"].to_dict("records")
        logger.info("%s: %.2fs to quantize, relative error %.4f", name, timing[name], qt.relative_error())
    gap = {p: paired_interval(base[("retain", p)] - base[("target", p)]) for p in probes}
    result = {"schemes": args.schemes, "effects": effect_rows, "update_size": update_rows,
              "quantize_seconds": timing, "retain_minus_target_nll": gap,
              "n_params_quantized": int(qt.stats["numel"].sum()),
              "model": {"target": str(paths.target), "retain": str(paths.retain)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), result, indent=1)
    atomic_write_text(args.out.with_suffix(".md"), render(result))
    print(render(result))
    return result


def render(res: dict) -> str:
    lines = ["# Quantization of the default models", "",
             f"{res['n_params_quantized']} weights quantized (the linear layers of the decoder blocks). "
             "ΔNLL: change of the mean answer NLL (nats), paired 95% t-interval over the instances.", "",
             "| scheme | model | rel. weight error | forget NLL | ΔNLL forget | retain NLL | ΔNLL retain "
             "| time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    eff = {(r["scheme"], r["model"], r["probe"]): r for r in res["effects"]}
    for s in res["schemes"]:
        for m in ("target", "retain"):
            f, r = eff[(s, m, "forget")], eff[(s, m, "retain")]
            t = f"{res['quantize_seconds'][s]:.2f}" if m == "target" else ""
            lines.append(f"| {s} | {m} | {f['rel_weight_error']:.4f} | {f['nll_before']:.3f} → {f['nll_after']:.3f} "
                         f"| {f['delta']:+.4f} [{f['delta_lo']:+.4f}, {f['delta_hi']:+.4f}] "
                         f"| {r['nll_before']:.3f} → {r['nll_after']:.3f} "
                         f"| {r['delta']:+.4f} [{r['delta_lo']:+.4f}, {r['delta_hi']:+.4f}] | {t} |")
    g = res["retain_minus_target_nll"]
    lines += ["", f"Retain model minus target, forget NLL: {g['forget'][0]:+.3f} [{g['forget'][1]:+.3f}, "
              f"{g['forget'][2]:+.3f}]; retain NLL: {g['retain'][0]:+.3f} [{g['retain'][1]:+.3f}, "
              f"{g['retain'][2]:+.3f}].",
              "", "## Update size, target → retain model, against each scheme's step", "",
              "| scheme | group | ‖Δ‖_F | mean abs Δ | mean step | ratio | below step/2 | changed codes "
              "| survival |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in res["update_size"]:
        lines.append(f"| {r['scheme']} | {r['name']} | {r['update_fro']:.3f} | {r['update_mean_abs']:.2e} | "
                     f"{r['step_target']:.2e} | {r['ratio']:.3f} | {r['frac_below_half_step']:.3f} | "
                     f"{r['changed_code_frac']:.3f} | {r['survival']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
