"""Our weight quantizers against bitsandbytes and torchao on the same weights, and what they cost.

Agreement (:func:`unlearning.attacks.quantize_weight` against the libraries' own quantizers, on
the default target model's linear weights and on a random N(0, 0.02²) matrix, float32 and
bfloat16):

- bitsandbytes (``bitsandbytes.functional``): ``int8_vectorwise_quant`` (LLM.int8's row-wise
  absmax int8) for ``int8`` and, on a (R·C/128, 128) view, ``int8-g128``; ``quantize_4bit`` /
  ``dequantize_4bit`` with blocks of 64 for ``nf4`` and ``fp4``;
- torchao (``torchao.quantization.quant_primitives``: ``choose_qparams_affine``,
  ``quantize_affine``, ``dequantize_affine``, block ``(1, g)``) for every round-to-nearest
  scheme: ``MappingType.SYMMETRIC`` with the range ``[-q_max, q_max]``, ``ASYMMETRIC`` with
  ``[0, 2^b - 1]``.

Each row: the fraction of scales (and zero points) that are bit-identical, the fraction of codes
that differ, whether every differing code sits at a rounding tie (the exact quotient within 4
float32 ulps of a rounding boundary) and differs by one step, and the largest relative
difference of the de-quantized weights where the codes agree.

Cost: seconds to quantize one (4096, 11008) float32 weight (a Llama-2-7B MLP projection) with
ours and with the library, side by side in one process, median of ``--repeats``, one thread;
and the peak extra memory of ours (float64 temporaries).

    python benchmarks/bench_quantize.py            # writes benchmarks/results/bench_quantize.{json,md}
    python benchmarks/bench_quantize.py --quick    # a (1024, 2048) weight, 1 repeat, no default model

torchao is optional (transformers imports it on every model load when it is installed, so the
project does not install it): put it on the path to get its rows, e.g.
``pip install --no-deps --target /tmp/torchao torchao`` and ``PYTHONPATH=/tmp/torchao``.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from geffect.io import atomic_write_json, atomic_write_text  # noqa: E402
from unlearning.attacks import FP4_VALUES, NF4_VALUES, get_scheme, quantize_weight  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakMemory  # noqa: E402

logger = logging.getLogger("bench_quantize")
RTN = ("int8", "int8-g128", "int4", "int4-g128", "int8-asym", "int8-g128-asym", "int4-asym", "int4-g128-asym")
EPS32 = torch.finfo(torch.float32).eps


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------- the libraries
def bnb_quantize(W: torch.Tensor, name: str) -> dict:
    """codes (R, C), scale (R, G), dequantized (R, C) from bitsandbytes."""
    import bitsandbytes.functional as F

    scheme = get_scheme(name)
    if scheme.kind == "int":
        view = W.reshape(-1, scheme.group_size or W.shape[1])  # (R * G, g)
        codes, stats, _ = F.int8_vectorwise_quant(view.clone())
        scale = (stats / 127).float().reshape(W.shape[0], -1)
        deq = (codes.float() * scale.reshape(-1, 1)).reshape(W.shape)  # float32, like its matmul path
        return {"codes": codes.reshape(W.shape), "scale": scale, "deq": deq.to(W.dtype)}
    packed, state = F.quantize_4bit(W, blocksize=scheme.group_size, quant_type=scheme.kind)
    b = packed.reshape(-1).long()
    codes = torch.stack([b >> 4, b & 15], dim=1).reshape(-1)[: W.numel()].reshape(W.shape)  # high nibble first
    return {"codes": codes, "scale": state.absmax.reshape(W.shape[0], -1), "deq": F.dequantize_4bit(packed, state)}


def torchao_quantize(W: torch.Tensor, name: str) -> dict:
    from torchao.quantization.quant_primitives import (MappingType, choose_qparams_affine, dequantize_affine,
                                                       quantize_affine)

    scheme = get_scheme(name)
    dtype_in = W.dtype
    W = W.float()  # torchao computes a bf16 weight's scale in bf16; give it the same values in float32
    block = (1, scheme.group_size or W.shape[1])
    if scheme.symmetric:
        q_max = 2 ** (scheme.bits - 1) - 1
        mapping, dtype, lo, hi = MappingType.SYMMETRIC, torch.int8, -q_max, q_max
    else:
        mapping, dtype, lo, hi = MappingType.ASYMMETRIC, torch.uint8, 0, 2 ** scheme.bits - 1
    scale, zero = choose_qparams_affine(W, mapping, block, dtype, lo, hi, scale_dtype=torch.float32,
                                        zero_point_dtype=torch.int32)
    codes = quantize_affine(W, block, scale, zero, dtype, lo, hi)
    deq = dequantize_affine(codes, block, scale, zero, dtype, lo, hi, output_dtype=torch.float32).to(dtype_in)
    R = W.shape[0]
    return {"codes": codes.reshape(W.shape), "scale": scale.reshape(R, -1),
            "zero": None if scheme.symmetric else zero.reshape(R, -1), "deq": deq}


# --------------------------------------------------------------------------- agreement
def compare(W: torch.Tensor, name: str, ref: dict) -> dict:
    scheme = get_scheme(name)
    ours = quantize_weight(W, scheme)
    codes, rcodes = ours.codes.long(), ref["codes"].long()
    if scheme.kind == "fp4":  # two zeros: compare them as one label
        codes, rcodes = codes.masked_fill(codes == 8, 0), rcodes.masked_fill(rcodes == 8, 0)
    diff = codes != rcodes
    w = W.double()[diff]  # (n,) only the weights whose codes differ
    s_ = ours.expand(ours.scale.double().clamp_min(1e-300))[diff]
    if scheme.kind == "int":
        q = w / s_  # exact quotient
        at_tie = ((q - q.floor()) - 0.5).abs() <= 4 * EPS32 * q.abs().clamp_min(1)
        one_step = (ours.codes.long() - ref["codes"].long()).abs()[diff] == 1
    else:
        table = torch.tensor(NF4_VALUES if scheme.kind == "nf4" else FP4_VALUES, dtype=torch.float64).sort().values
        mids = (table[:-1] + table[1:]) / 2  # (15,)
        at_tie = ((w / s_).unsqueeze(-1) - mids).abs().le(4 * EPS32).any(-1)
        one_step = torch.ones_like(at_tie)
    same = ~diff
    d_ours, d_ref = ours.dequantized.double()[same], ref["deq"].double()[same]
    rel = ((d_ours - d_ref).abs() / d_ref.abs().clamp_min(1e-30)).max() if bool(same.any()) else torch.tensor(0.0)
    row = {
        "scales_identical": float((ours.scale == ref["scale"].float()).double().mean()),
        "codes_differ": int(diff.sum()), "numel": W.numel(),
        "differ_only_at_ties": bool((at_tie & one_step).all()),
        "deq_max_rel_diff_where_codes_agree": float(rel),
    }
    if ref.get("zero") is not None:
        row["zero_points_identical"] = float((ours.zero_point.long() == ref["zero"].long()).double().mean())
    return row


def weights(quick: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shape = (1024, 2048) if quick else (4096, 4096)
    out = {f"random {shape[0]}x{shape[1]} fp32": torch.randn(shape, generator=g) * 0.02}
    out[f"random {shape[0]}x{shape[1]} bf16"] = out[f"random {shape[0]}x{shape[1]} fp32"].bfloat16()
    if not quick:
        from unlearning.attacks import quantizable_modules
        from unlearning.models import load_model, prepare_default_models

        model = load_model(prepare_default_models().target)
        mats = [m.weight.detach() for m in quantizable_modules(model).values()]
        # one matrix per shape: rows of equal length stacked (the per-row schemes see the same rows)
        by_cols: dict[int, list[torch.Tensor]] = {}
        for m in mats:
            by_cols.setdefault(m.shape[1], []).append(m)
        for cols, ms in sorted(by_cols.items()):
            out[f"default target, in={cols} ({len(ms)} modules) fp32"] = torch.cat(ms, dim=0)
    return out


def agreement(quick: bool) -> list[dict]:
    rows = []
    for wname, W in weights(quick).items():
        libs = []
        if have("bitsandbytes"):
            libs += [("bitsandbytes", n, bnb_quantize) for n in ("int8", "int8-g128", "nf4", "fp4")]
        if have("torchao"):
            libs += [("torchao", n, torchao_quantize) for n in RTN]
        for lib, name, fn in libs:
            scheme = get_scheme(name)
            if W.shape[1] % (scheme.group_size or 1):
                continue
            row = {"weights": wname, "library": lib, "scheme": name, **compare(W, name, fn(W, name))}
            logger.info("%s", row)
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- cost
def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cost(quick: bool, repeats: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    shape = (1024, 2048) if quick else (4096, 11008)
    W = torch.randn(shape, generator=g) * 0.02
    rows = []
    for name in ("int8", "int8-g128", "int4-g128", "int4-g128-asym", "nf4", "fp4"):
        scheme = get_scheme(name)
        with PeakMemory("cpu") as mem:
            ours = timed(lambda: quantize_weight(W, scheme), repeats)
        row = {"scheme": name, "shape": list(shape), "ours_s": ours, "ours_peak_extra_MiB": mem.delta / 2 ** 20,
               "weight_MiB": W.numel() * 4 / 2 ** 20}
        lib = "bitsandbytes" if (scheme.kind != "int" or (scheme.symmetric and scheme.bits == 8)) else "torchao"
        if have(lib):
            fn = bnb_quantize if lib == "bitsandbytes" else torchao_quantize
            row.update(library=lib, library_s=timed(lambda: fn(W, name), repeats))
            row["ratio"] = row["ours_s"] / row["library_s"]
        rows.append(row)
        logger.info("%s", row)
    return rows


def render(res: dict) -> str:
    lines = ["# Quantizers against bitsandbytes and torchao", "",
             f"bitsandbytes {res['versions'].get('bitsandbytes', 'absent')}, torchao "
             f"{res['versions'].get('torchao', 'absent')}, torch {res['versions']['torch']}; CPU, one thread.", "",
             "| weights | library | scheme | scales identical | zero points identical | codes differing | "
             "only at ties | max rel. diff of Q(w) (codes equal) |", "|---|---|---|---|---|---|---|---|"]
    for r in res["agreement"]:
        zp = f"{r['zero_points_identical']:.4f}" if "zero_points_identical" in r else "—"
        lines.append(f"| {r['weights']} | {r['library']} | {r['scheme']} | {r['scales_identical']:.4f} | {zp} | "
                     f"{r['codes_differ']} / {r['numel']} | {'yes' if r['differ_only_at_ties'] else 'NO'} | "
                     f"{r['deq_max_rel_diff_where_codes_agree']:.2e} |")
    lines += ["", "## Cost", "", "| scheme | weight | ours (s) | library | library (s) | ours / library | "
              "peak extra memory, ours (MiB) |", "|---|---|---|---|---|---|---|"]
    for r in res["cost"]:
        lib = r.get("library", "—")
        ls = f"{r['library_s']:.3f}" if "library_s" in r else "—"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "—"
        lines.append(f"| {r['scheme']} | {r['shape'][0]}×{r['shape'][1]} fp32 ({r['weight_MiB']:.0f} MiB) | "
                     f"{r['ours_s']:.3f} | {lib} | {ls} | {ratio} | {r['ours_peak_extra_MiB']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small weight, one repeat, no default model")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_quantize")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    versions = {"torch": torch.__version__}
    for lib in ("bitsandbytes", "torchao"):
        if have(lib):
            versions[lib] = __import__(lib).__version__
    res = {"versions": versions, "agreement": agreement(args.quick),
           "cost": cost(args.quick, 1 if args.quick else args.repeats)}
    bad = [r for r in res["agreement"] if not r["differ_only_at_ties"]]
    if not args.quick:
        atomic_write_json(args.out.with_suffix(".json"), res, indent=1)
        atomic_write_text(args.out.with_suffix(".md"), render(res))
    print(render(res))
    if bad:
        raise SystemExit(f"codes differ away from rounding ties: {bad}")
    return res


if __name__ == "__main__":
    main()
