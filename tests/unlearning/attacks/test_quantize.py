"""Weight-only quantization (unlearning.attacks.quantize): against a float64 loop reference, against
bitsandbytes on the same weights, idempotence, the update-size table, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geffect.testing import tiny_causal_lm
from unlearning.attacks import (DEFAULT_SCHEMES, FP4_VALUES, NF4_VALUES, QuantScheme, get_scheme, quantizable_modules,
                                quantize_model, quantize_weight, update_size)

ALL_SCHEMES = DEFAULT_SCHEMES + ("int8-asym", "int4-asym", "int8-g128-asym", "nf4-g32", "fp4-g128")


def random_weight(rows: int = 24, cols: int = 256, *, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Normal weights with the awkward rows: all zero, constant, all positive, one huge outlier."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.02
    W[1] = 0.0
    W[2] = 0.013
    W[3] = W[3].abs()
    W[4, 7] = 0.9
    W[5, :64] = 0.0  # one all-zero block of 64
    return W.to(dtype)


# --------------------------------------------------------------------------- the float64 reference
def _f32(x: float) -> float:
    return float(np.float32(x))


def reference_quantize(W: torch.Tensor, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scales, dequantized in float64), one weight at a time, in Python floats.

    The scale is float32 arithmetic on the group's float32 extreme values; the code is the nearest
    integer (half to even, Python's round) to the exact quotient w / s; the 4-bit tables pick the
    nearest value (a tie goes to the lower value; FP4's zero is -0 for w < 0, else +0).
    """
    R, C = W.shape
    g = scheme.group_size or C
    w = W.double().numpy()
    codes = np.zeros((R, C), dtype=np.int64)
    deq = np.zeros((R, C))
    scales = np.zeros((R, C // g))
    for r in range(R):
        for j in range(C // g):
            vals = [float(w[r, j * g + k]) for k in range(g)]
            if scheme.kind == "int" and scheme.symmetric:
                q_max = 2 ** (scheme.bits - 1) - 1
                s = _f32(np.float32(max(abs(v) for v in vals)) / np.float32(q_max))
                z, lo_code, hi_code = 0, -q_max, q_max
            elif scheme.kind == "int":
                hi_code = 2 ** scheme.bits - 1
                lo32 = np.float32(min(min(vals), 0.0))
                hi32 = np.float32(max(max(vals), 0.0))
                s = _f32((hi32 - lo32) / np.float32(hi_code))
                z = 0 if s == 0 else min(max(-round(_f32(lo32 / np.float32(s))), 0), hi_code)
                lo_code = 0
            else:
                s = _f32(max(abs(v) for v in vals))  # the block absmax
            scales[r, j] = s
            for k, v in enumerate(vals):
                if scheme.kind == "int":
                    q = z if s == 0 else min(max(round(v / s) + z, lo_code), hi_code)
                    codes[r, j * g + k], deq[r, j * g + k] = q, (q - z) * s
                    continue
                table = NF4_VALUES if scheme.kind == "nf4" else FP4_VALUES
                x = 0.0 if s == 0 else max(-1.0, min(1.0, v / s))
                best = min(range(16), key=lambda i: (abs(x - table[i]), table[i]))  # tie: the lower value
                if scheme.kind == "fp4" and table[best] == 0.0:
                    best = 8 if x < 0 else 0
                codes[r, j * g + k], deq[r, j * g + k] = best, table[best] * s
    return codes, scales, deq


@pytest.mark.parametrize("name", ALL_SCHEMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_matches_float64_reference(name, dtype):
    scheme = get_scheme(name)
    W = random_weight(dtype=dtype)
    out = quantize_weight(W, scheme)
    codes, scales, deq = reference_quantize(W, scheme)
    assert torch.equal(out.codes.long(), torch.from_numpy(codes))
    assert torch.equal(out.scale.double(), torch.from_numpy(scales))
    assert out.scale.dtype == torch.float32 and out.dequantized.dtype == dtype
    assert torch.equal(out.dequantized, torch.from_numpy(deq).to(dtype))  # one rounding of the exact product
    if scheme.kind == "int" and not scheme.symmetric:
        assert out.zero_point is not None and int(out.zero_point.min()) >= 0
    rel = float((out.dequantized.double() - W.double()).norm() / W.double().norm())
    assert rel < {8: 0.05, 4: 0.3}[scheme.bits]  # a sanity bound (row 4 holds an outlier)


def test_exact_ties():
    """Ties decided as documented: RTN rounds half to even; NF4/FP4 give a midpoint the lower value.
    (float64 weights put w / s exactly on the tie; s = 1 and absmax = 1 are exact in float32.)"""
    row = torch.tensor([[127.0, 2.5, 3.5, -2.5, -3.5, 0.5, -0.5, 126.5]], dtype=torch.float64)
    assert quantize_weight(row, "int8").codes.tolist() == [[127, 2, 4, -2, -4, 0, 0, 126]]
    asym = torch.tensor([[0.0, 15.0, 2.5, 3.5, 0.5, 14.5]], dtype=torch.float64)  # s = 1, z = 0
    assert quantize_weight(asym, "int4-asym").codes.tolist() == [[0, 15, 2, 4, 0, 14]]
    for kind, values in (("nf4", NF4_VALUES), ("fp4", FP4_VALUES)):
        table = sorted(set(values))
        mids = [(a + b) / 2 for a, b in zip(table[:-1], table[1:])]  # exact in float64
        W = torch.tensor([[1.0] + mids], dtype=torch.float64)  # (1, 1 + len(mids)); absmax 1
        q = quantize_weight(W, QuantScheme(kind=kind, bits=4, group_size=W.shape[1]))
        got = [values[i] for i in q.codes[0, 1:].tolist()]
        assert got == table[:-1], kind  # each midpoint -> the lower of its two values


@pytest.mark.parametrize("name", ["int4-g128-asym", "nf4"])
def test_row_chunks_do_not_change_the_result(monkeypatch, name):
    import unlearning.attacks.quantize as qmod

    W = random_weight()
    whole = quantize_weight(W, name)
    monkeypatch.setattr(qmod, "_CHUNK", 3 * W.shape[1] + 5)  # 3 rows per chunk, a ragged last chunk
    parts = quantize_weight(W, name)
    for field in ("codes", "scale", "zero_point", "step", "dequantized"):
        a, b = getattr(whole, field), getattr(parts, field)
        assert (a is None and b is None) or torch.equal(a, b), field


def test_symmetric_grid_keeps_zero_and_absmax():
    """0 is exact; the row's largest weight gets code ±127 and comes back up to the float32 rounding
    of the scale (127 · fl32(absmax / 127) is within one ulp of absmax)."""
    W = random_weight()
    out = quantize_weight(W, "int8")
    i = W.abs().argmax(dim=1)
    rows = torch.arange(W.shape[0])
    nonzero = W[rows, i] != 0
    assert torch.equal(out.codes[rows, i][nonzero].abs(), torch.full((int(nonzero.sum()),), 127, dtype=torch.int16))
    torch.testing.assert_close(out.dequantized[rows, i], W[rows, i], rtol=torch.finfo(torch.float32).eps, atol=0)
    assert bool((out.dequantized[W == 0] == 0).all())


# --------------------------------------------------------------------------- bitsandbytes on the same weights
def bitsandbytes_functional():
    """bitsandbytes.functional (the ``quant`` extra); a skip here fails under CI=true (tests/conftest.py)."""
    return pytest.importorskip("bitsandbytes.functional",
                               reason="bitsandbytes is not installed (pip install -e '.[quant]')")


def _unpack_4bit(packed: torch.Tensor, n: int) -> torch.Tensor:
    """bitsandbytes packs two 4-bit codes per byte, the first in the high nibble."""
    b = packed.reshape(-1).to(torch.uint8).long()
    return torch.stack([b >> 4, b & 15], dim=1).reshape(-1)[:n]


def test_tables_are_bitsandbytes_tables():
    F = bitsandbytes_functional()
    assert F.get_4bit_type("nf4", device="cpu").tolist() == list(NF4_VALUES)
    assert F.get_4bit_type("fp4", device="cpu").tolist() == list(FP4_VALUES)


def _codebook_tie_mismatches(W: torch.Tensor, ours, ref_codes: torch.Tensor, quant_type: str) -> torch.Tensor:
    """Where our 4-bit codes differ from ``ref_codes`` (FP4's ±0 as one label); asserts each such weight
    has w / absmax within 4 float32 ulps of a midpoint between two table values (a rounding tie)."""
    codes, ref = ours.codes.long().cpu(), ref_codes.long().cpu()
    if quant_type == "fp4":
        codes, ref = codes.masked_fill(codes == 8, 0), ref.masked_fill(ref == 8, 0)
    mismatch = codes != ref
    if bool(mismatch.any()):
        x = (W.double() / ours.expand(ours.scale.double())).cpu()[mismatch]  # (n,) exact w / absmax
        table = torch.tensor(NF4_VALUES if quant_type == "nf4" else FP4_VALUES, dtype=torch.float64).sort().values
        mids = (table[:-1] + table[1:]) / 2  # (15,)
        near = ((x.unsqueeze(-1) - mids).abs() <= 4 * torch.finfo(torch.float32).eps).any(-1)
        assert bool(near.all()), "a 4-bit code differs away from a rounding tie"
    return mismatch


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_4bit_matches_bitsandbytes(quant_type, dtype):
    """Against bnb.functional.quantize_4bit on the same weights: the absmax bit-exact; float32 weights:
    codes and de-quantized values bit-exact; bfloat16 weights: codes too, except at exact ties.

    bitsandbytes blocks the flattened weight; with in_features divisible by 64 its blocks are ours.
    bf16 weights make w / absmax land exactly on a midpoint of two table values (e.g. -5/12 between
    FP4's -4/12 and -6/12) in ~0.05% of weights: bitsandbytes rounds w·(1/absmax) to float32 and
    compares with float32 midpoints, we compare the exact quotient with the exact midpoint of the
    float32 table values, so such a tie can go either way. FP4 has two zeros: bitsandbytes' CPU
    backend labels a small positive value -0 (index 8) and a small negative one +0 (its sort of the
    table), its CUDA kernel the other way round; we use the sign of the weight (the CUDA convention),
    so zero codes compare as one label.
    """
    F = bitsandbytes_functional()
    W = random_weight(rows=64, cols=512, dtype=dtype)
    packed, state = F.quantize_4bit(W, blocksize=64, quant_type=quant_type)
    ref = _unpack_4bit(packed, W.numel()).reshape(W.shape)
    ours = quantize_weight(W, quant_type)
    assert torch.equal(ours.scale.reshape(-1), state.absmax)
    mismatch = _codebook_tie_mismatches(W, ours, ref, quant_type)
    if dtype == torch.float32:
        assert not bool(mismatch.any())
        assert torch.equal(ours.dequantized, F.dequantize_4bit(packed, state))
    else:  # bitsandbytes rounds q*absmax to float32 first, then to bf16: compare values where codes agree
        assert int(mismatch.sum()) <= 2e-3 * W.numel()
        deq = F.dequantize_4bit(packed, state)
        torch.testing.assert_close(ours.dequantized[~mismatch], deq[~mismatch], rtol=2 ** -8, atol=0)


def _tie_mismatches_only(W: torch.Tensor, ours, ref_codes: torch.Tensor) -> int:
    """Codes differ only where the exact quotient lies within 4 float32 ulps of k + 1/2, by one."""
    diff = ours.codes.long() != ref_codes.long()
    if not bool(diff.any()):
        return 0
    quotient = W.double() / ours.expand(ours.scale.double())  # (R, C) exact w / s
    frac = (quotient - quotient.floor() - 0.5).abs()
    ulps = 4 * torch.finfo(torch.float32).eps * quotient.abs()
    assert bool((frac[diff] <= ulps[diff]).all()), "a code differs away from a rounding tie"
    assert bool(((ours.codes.long() - ref_codes.long()).abs()[diff] == 1).all())
    return int(diff.sum())


@pytest.mark.parametrize("name", ["int8", "int8-g128"])
def test_int8_matches_bitsandbytes_llm_int8(name):
    """LLM.int8's weight quantization (bnb.functional.int8_vectorwise_quant: row-wise absmax, 127) is
    our symmetric int8; on a (R·C/128, 128) view it is int8-g128. Scales are bit-exact; codes are too
    except at rounding ties: bitsandbytes multiplies by the float32 number 127/absmax, we divide
    exactly, so a quotient within an ulp of k + 1/2 can round the other way (then by one)."""
    F = bitsandbytes_functional()
    W = random_weight(rows=512, cols=1024)
    W[1] = 0.02  # bitsandbytes turns an all-zero row into NaN scales; keep every row non-zero here
    W[5, :64] = 0.01
    scheme = get_scheme(name)
    view = W.reshape(-1, scheme.group_size or W.shape[1])  # (R * G, g)
    codes, row_stats, _ = F.int8_vectorwise_quant(view.clone())
    ours = quantize_weight(W, scheme)
    assert torch.equal(ours.scale.reshape(-1), (row_stats / 127).float())
    n = _tie_mismatches_only(W, ours, codes.reshape(W.shape))
    assert n <= 1e-5 * W.numel()


@pytest.mark.cuda
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_4bit_matches_bitsandbytes_cuda(quant_type):
    """On a GPU: bitsandbytes' CUDA kernels give the same codes, absmax and de-quantized weights."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    F = bitsandbytes_functional()
    W = random_weight(rows=256, cols=1024).cuda()
    W[1] = 0.01  # the CUDA kernel divides by the block absmax without a floor
    W[5, :64] = 0.01
    packed, state = F.quantize_4bit(W, blocksize=64, quant_type=quant_type)
    ref = _unpack_4bit(packed, W.numel()).reshape(W.shape).cpu()
    ours = quantize_weight(W, quant_type)
    assert ours.codes.is_cuda
    mismatch = _codebook_tie_mismatches(W, ours, ref, quant_type)
    assert int(mismatch.sum()) <= 1e-5 * W.numel()
    assert torch.equal(ours.scale.reshape(-1), state.absmax)
    deq = F.dequantize_4bit(packed, state)
    assert torch.equal(ours.dequantized[~mismatch.cuda()], deq[~mismatch.cuda()])


# --------------------------------------------------------------------------- the model-level attack
def test_quantize_model_selects_block_linears_and_copies():
    model = tiny_causal_lm("llama", hidden=64, layers=2, dtype=torch.float32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    q = quantize_model(model, "int8")
    for n, p in model.named_parameters():  # the input model is untouched
        assert torch.equal(p, before[n])
    names = set(q.stats["module"])
    assert names == {f"model.layers.{i}.{m}" for i in range(2) for m in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert set(q.stats["group"]) == {"layer.0", "layer.1"}
    qp = dict(q.model.named_parameters())
    for n, p in model.named_parameters():
        if n.endswith(".weight") and n[: -len(".weight")] in names:
            assert torch.equal(qp[n], quantize_weight(p, "int8").dequantized)
        else:  # embeddings, norms, lm_head keep their values
            assert torch.equal(qp[n], p)
    assert 0 < q.relative_error() < 0.02


def test_quantize_model_lm_head_embeddings_and_tied_weights():
    model = tiny_causal_lm("llama", hidden=64, layers=1, tied=True, dtype=torch.float32)
    mods = quantizable_modules(model, lm_head=True, embeddings=True)
    assert "model.embed_tokens" in mods and "lm_head" not in mods  # one tied weight, listed once
    q = quantize_model(model, "int8", lm_head=True, embeddings=True)
    emb = q.model.get_input_embeddings().weight
    assert emb is q.model.get_output_embeddings().weight
    assert torch.equal(emb, quantize_weight(model.get_input_embeddings().weight, "int8").dequantized)
    untied = tiny_causal_lm("llama", hidden=64, layers=1, dtype=torch.float32)
    assert list(quantizable_modules(untied, lm_head=True))[-1] == "lm_head"


def test_quantize_model_gpt2_conv1d():
    """GPT-2's Conv1D stores (in, out): rows of the quantized matrix are still output channels."""
    model = tiny_causal_lm("gpt2", hidden=64, layers=1, dtype=torch.float32)
    q = quantize_model(model, "int4-g32")
    conv = model.transformer.h[0].mlp.c_fc
    assert conv.weight.shape == (64, 256)
    expect = quantize_weight(conv.weight.t(), "int4-g32").dequantized.t()
    assert torch.equal(q.model.transformer.h[0].mlp.c_fc.weight, expect)
    assert len(q.stats) == 4


@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_quantizing_twice_is_idempotent(name):
    """Q(Q(θ)) = Q(θ) exactly for symmetric RTN, NF4 and FP4 (float32 model). Asymmetric RTN keeps
    every code and zero point; its float32 scale, recomputed from the de-quantized range
    (hi - lo rounded to float32), can move by one ulp, so values agree to 3e-7 relative."""
    model = tiny_causal_lm("llama", hidden=128, layers=1, dtype=torch.float32)
    scheme = get_scheme(name)
    once = quantize_model(model, scheme).model
    twice = quantize_model(once, scheme).model
    for (n, a), b in zip(once.named_parameters(), twice.parameters()):
        if scheme.kind != "int" or scheme.symmetric:
            assert torch.equal(a, b), n
        else:
            torch.testing.assert_close(b, a, rtol=3e-7, atol=0)
    for mod in quantizable_modules(once):
        W = dict(once.named_modules())[mod].weight
        first, second = quantize_weight(W, scheme), quantize_weight(dict(twice.named_modules())[mod].weight, scheme)
        assert torch.equal(first.codes, second.codes)


# --------------------------------------------------------------------------- update size vs the step
@pytest.fixture(scope="module")
def on_grid_target():
    """A tiny Llama whose linear weights sit exactly on the int4-g128 grid (Q(θ) of a random model)."""
    model = tiny_causal_lm("llama", hidden=128, layers=2, dtype=torch.float32)
    return quantize_model(model, "int4-g128").model


@pytest.mark.parametrize("c", [0.3, 0.7])
def test_update_size_known_fraction_of_the_step(on_grid_target, c):
    """Move the interior weights of two modules by c·(their group's step), extremes fixed (so the
    scale is unchanged): c = 0.3 keeps every code (the quantized models coincide), c = 0.7 moves
    each moved weight's code by one (the quantized update is one full step per moved weight)."""
    import copy

    scheme = get_scheme("int4-g128")
    target = on_grid_target
    unlearned = copy.deepcopy(target)
    mods = dict(unlearned.named_modules())
    expected = {}
    for name in ("model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        W = mods[name].weight
        qw = quantize_weight(W, scheme)
        step = qw.expand(qw.step)  # (R, C) float64
        moved = qw.codes.abs() < 6  # leaves ±7 (the absmax) and ±6 alone: the scale cannot change
        delta = torch.where(moved, c * step, torch.zeros_like(step))
        with torch.no_grad():
            W.copy_((W.double() + delta).float())
        expected[name] = dict(moved=moved, step=step, delta=delta)
    table = update_size(target, unlearned, scheme)
    mod_rows = table[table.level == "module"].set_index("name")
    for name, e in expected.items():
        row = mod_rows.loc[name]
        n_moved = int(e["moved"].sum())
        assert 0 < n_moved < e["moved"].numel()
        assert row.update_fro == pytest.approx(float(e["delta"].norm()), rel=1e-6)
        assert row.update_mean_abs == pytest.approx(float(e["delta"].abs().mean()), rel=1e-6)
        assert row.step_target == pytest.approx(float(e["step"].mean()), rel=1e-12)
        assert row.step_unlearned == row.step_target
        assert row.ratio == pytest.approx(float(e["delta"].abs().mean() / e["step"].mean()), rel=1e-6)
        frac_moved = n_moved / e["moved"].numel()
        if c < 0.5:
            assert row.changed_code_frac == 0 and row.changed_value_frac == 0
            assert row.frac_below_half_step == 1.0 and row.survival == 0.0
        else:
            assert row.changed_code_frac == pytest.approx(frac_moved, abs=1e-12)
            assert row.frac_below_half_step == pytest.approx(1 - frac_moved, abs=1e-12)
            assert row.quantized_update_fro == pytest.approx(float(e["delta"].norm()) / c, rel=1e-6)
            assert row.survival == pytest.approx(1 / c, rel=1e-6)
    untouched = mod_rows.drop(index=list(expected))
    assert (untouched.update_fro == 0).all() and (untouched.changed_code_frac == 0).all()
    assert untouched.survival.isna().all() and (untouched.ratio == 0).all()
    groups = table[table.level == "group"].set_index("name")
    assert list(groups.index) == ["layer.0", "layer.1"]
    assert groups.loc["layer.0", "update_fro"] == 0
    layer1 = mod_rows[mod_rows.group == "layer.1"]
    assert groups.loc["layer.1", "update_fro"] == pytest.approx(math.sqrt((layer1.update_fro ** 2).sum()), rel=1e-12)
    n_changed = sum(int(e["moved"].sum()) for e in expected.values()) if c > 0.5 else 0
    assert groups.loc["layer.1", "changed_code_frac"] == pytest.approx(n_changed / layer1.numel.sum(), abs=1e-12)
    model_row = table[table.level == "model"].iloc[0]
    assert model_row.numel == mod_rows.numel.sum()
    assert model_row.changed_code_frac == pytest.approx(n_changed / mod_rows.numel.sum(), abs=1e-12)


def test_update_size_of_identical_models_is_zero():
    model = tiny_causal_lm("llama", hidden=64, layers=1, dtype=torch.float32)
    table = update_size(model, model, "nf4")
    assert (table.update_fro == 0).all() and (table.changed_code_frac == 0).all()
    assert (table.step_target > 0).all() and set(table.level) == {"module", "group", "model"}


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, match", [
    ("int3", r"bits=3 is not supported; use 8 or 4"),
    ("int16-g128", r"bits=16 is not supported"),
    ("q4_0", r"unknown quantization scheme 'q4_0'.*int4-g128"),
    ("int4-g128-foo", r"unknown quantization scheme"),
    ("nf4-asym", r"nf4 uses absmax scaling"),
])
def test_bad_scheme_names(bad, match):
    with pytest.raises(ValueError, match=match):
        get_scheme(bad)


def test_bad_schemes_and_shapes():
    with pytest.raises(ValueError, match="use 8 or 4"):
        QuantScheme(bits=2)
    with pytest.raises(ValueError, match="unknown quantization kind 'gptq'"):
        QuantScheme(kind="gptq")
    with pytest.raises(ValueError, match="nf4 is a 4-bit format"):
        QuantScheme(kind="nf4", bits=8, group_size=64)
    with pytest.raises(ValueError, match=r"group_size must be a positive integer"):
        QuantScheme(bits=4, group_size=0)
    with pytest.raises(ValueError, match=r"proj: in_features=100 is not divisible by the group size 128 "
                                         r"of scheme 'int4-g128'.*per-output-channel"):
        quantize_weight(torch.randn(4, 100), "int4-g128", name="proj")
    with pytest.raises(ValueError, match="expected a 2-D weight"):
        quantize_weight(torch.randn(4, 4, 4), "int8")
    small = tiny_causal_lm("llama", hidden=64, layers=1, dtype=torch.float32)
    other = tiny_causal_lm("llama", hidden=64, layers=2, dtype=torch.float32)
    with pytest.raises(ValueError, match="same architecture"):
        update_size(small, other, "int8")


def test_bench_quantize_quick_agrees_with_bitsandbytes():
    """benchmarks/bench_quantize.py --quick runs, and every code it finds differing sits at a rounding tie."""
    import importlib.util
    from pathlib import Path

    bitsandbytes_functional()
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_quantize.py"
    spec = importlib.util.spec_from_file_location("_bench_quantize", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--quick"])
    rows = [r for r in res["agreement"] if r["library"] == "bitsandbytes"]
    assert len(rows) == 8 and all(r["differ_only_at_ties"] for r in rows)
    assert all(r["scales_identical"] == 1.0 for r in rows)
    assert all(r["codes_differ"] <= 2e-3 * r["numel"] for r in rows)
    assert {r["scheme"] for r in res["cost"]} >= {"int8", "nf4"}
