"""Masks: exact counts, deterministic ties, streamed thresholding, storage, masked training."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import geffect.masking as masking
from geffect.masking import selection, storage
from geffect.groups import parameter_groups
from geffect.losses import answer_nll
from geffect.masking import (apply_mask_to_gradients, check_mask, kept_count, load_mask, mask_overlap,
                             mask_summary, masked_direction, module_subtype, module_type, save_mask, weight_mask)

DENSITIES = [0.0, 0.1, 0.5, 0.95, 1.0]


def tiny_model(seed=0, tie=False):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg)


def batch(bsz=3, T=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 37, (bsz, T), generator=g)
    labels = ids.clone()
    labels[:, :3] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def random_scores(seed=0, shapes=((5, 7), (13,), (4, 3, 2), (1,), (9, 11))):
    g = torch.Generator().manual_seed(seed)
    return {f"t{i}": torch.rand(s, generator=g) for i, s in enumerate(shapes)}


def reference_mask(scores, k):
    """Full sort: descending score, ties to the lower global flat index."""
    flat = torch.cat([s.reshape(-1).double() for s in scores.values()])  # float32 -> float64 keeps the order
    order = torch.sort(-flat, stable=True).indices  # stable: equal values keep index order
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order[:k]] = True
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = keep[start:start + s.numel()].view(s.shape)
        start += s.numel()
    return out


def total(mask):
    return sum(int(m.sum()) for m in mask.values())


def equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)


@pytest.mark.parametrize("chunk,max_candidates", [(1 << 22, 1 << 24), (61, 1 << 24), (61, 0)])
@pytest.mark.parametrize("kind", ["random", "quantised", "all_equal", "zeros", "negative"])
def test_global_matches_full_sort(monkeypatch, chunk, max_candidates, kind):
    monkeypatch.setattr(selection, "_CHUNK", chunk)  # 61: 3 chunks, ties straddle them
    monkeypatch.setattr(selection, "_MAX_CANDIDATES", max_candidates)  # 0 forces the third pass
    scores = random_scores()
    if kind == "quantised":
        scores = {n: (s * 4).floor() for n, s in scores.items()}  # heavy ties
    elif kind == "all_equal":
        scores = {n: torch.full_like(s, 0.5) for n, s in scores.items()}
    elif kind == "zeros":  # magnitude of a weight set with many exact zeros (and -0.0)
        scores = {n: (s - 0.6).clamp_min(0) * torch.where(s > 0.3, 1.0, -1.0) for n, s in scores.items()}
        scores = {n: s.abs() if i % 2 else s.clamp_min(0) for i, (n, s) in enumerate(scores.items())}
    elif kind == "negative":  # includes -0.0, which must tie with +0.0
        scores = {n: ((s - 0.5) * 8).round() / 8 for n, s in scores.items()}
        scores["t0"][0, :3] = torch.tensor([-0.0, 0.0, -0.0])
    N = sum(s.numel() for s in scores.values())
    for density in DENSITIES + [0.37, 1 / N]:
        m = weight_mask(scores, density)
        assert total(m) == round(density * N)
        assert all(m[n].dtype == torch.bool and m[n].shape == scores[n].shape for n in scores)
        assert equal(m, reference_mask(scores, round(density * N)))


@pytest.mark.parametrize("chunk,max_candidates", [(1 << 22, 1 << 24), (61, 1 << 24), (61, 0), (7, 3)])
@pytest.mark.parametrize("kind", ["close", "quantised", "negative"])
def test_float64_scores_rank_in_float64(monkeypatch, chunk, max_candidates, kind):
    """float64 scores are ranked on their float64 values (int64 radix keys, four 16-bit digits):
    values that round to the same float32 are still told apart, ties still go by position."""
    monkeypatch.setattr(selection, "_CHUNK", chunk)
    monkeypatch.setattr(selection, "_MAX_CANDIDATES", max_candidates)
    base = {n: s.double() for n, s in random_scores(7).items()}
    if kind == "close":  # distinct float64 values, many equal after rounding to float32
        scores = {n: 1.0 + (s * 64).floor() * 1e-12 + s * 1e-14 for n, s in base.items()}
        flat32 = torch.cat([s.reshape(-1).float() for s in scores.values()])
        assert flat32.unique().numel() < flat32.numel() // 4
    elif kind == "quantised":
        scores = {n: (s * 5).floor() / 3 for n, s in base.items()}
    else:
        scores = {n: ((s - 0.5) * 8).round() / 8 - 1e-13 * (s > 0.5) for n, s in base.items()}
        scores["t0"][0, :2] = torch.tensor([-0.0, 0.0], dtype=torch.float64)
    N = sum(s.numel() for s in scores.values())
    for density in DENSITIES + [0.37, 1 / N]:
        m = weight_mask(scores, density)
        assert total(m) == round(density * N)
        assert equal(m, reference_mask(scores, round(density * N)))
    if kind == "close":  # ranking the float32 roundings would differ
        s32 = {n: s.float() for n, s in scores.items()}
        assert not equal(weight_mask(scores, 0.37), weight_mask(s32, 0.37))


def test_mask_file_is_plain_safetensors(tmp_path):
    """The streamed writer produces a standard safetensors file (read back by safetensors itself)."""
    from safetensors.torch import load_file

    m = weight_mask(random_scores(2), 0.4)
    m["empty"] = torch.zeros((0, 3), dtype=torch.bool)
    path = save_mask(m, tmp_path / "m.safetensors", metadata={"note": "x"})
    raw = load_file(str(path))
    assert set(raw) == set(m) and all(raw[n].dtype == torch.uint8 and torch.equal(raw[n].bool(), m[n]) for n in m)
    meta = masking.mask_metadata(path)
    assert meta["kept"] == str(total(m)) and meta["total"] == str(sum(t.numel() for t in m.values()))
    assert meta["note"] == "x" and meta["format"] == masking.MASK_FORMAT


def test_all_equal_keeps_first_positions():
    scores = {"a": torch.ones(4), "b": torch.ones(2, 3)}
    m = weight_mask(scores, 0.5)  # 5 of 10
    assert m["a"].all() and m["b"].flatten().tolist() == [True, False, False, False, False, False]


def test_deterministic_and_float64_input():
    s = random_scores(3)
    assert equal(weight_mask(s, 0.3), weight_mask(s, 0.3))
    s64 = {n: t.double() for n, t in s.items()}
    assert equal(weight_mask(s64, 0.3), weight_mask(s, 0.3))


@pytest.mark.parametrize("kind", ["random", "all_equal"])
def test_layer_scope_counts(kind):
    scores = random_scores(5)
    if kind == "all_equal":
        scores = {n: torch.zeros_like(s) for n, s in scores.items()}
    groups = {"g0": ["t0", "t1"], "g1": ["t2", "t3"], "g2": ["t4"]}
    N = sum(s.numel() for s in scores.values())
    for density in DENSITIES + [0.33]:
        m = weight_mask(scores, density, scope="layer", groups=groups)
        assert total(m) == round(density * N)
        for names in groups.values():
            n_g = sum(scores[n].numel() for n in names)
            kept = sum(int(m[n].sum()) for n in names)
            assert int(density * n_g) <= kept <= -int(-density * n_g // 1)  # floor .. ceil
            sub = {n: scores[n] for n in names}
            assert equal({n: m[n] for n in names}, reference_mask(sub, kept))


def test_layer_scope_with_model_groups():
    model = tiny_model()
    scores = {n: p.detach().abs() for n, p in model.named_parameters()}
    m = weight_mask(scores, 0.5, scope="layer", groups=model)
    N = sum(s.numel() for s in scores.values())
    assert total(m) == round(0.5 * N)
    summary = mask_summary(m, model)
    groups = summary[summary.view == "group"]
    assert set(groups.name) == set(parameter_groups(model))
    assert ((groups.fraction - 0.5).abs() < 0.02).all()
    with pytest.raises(ValueError, match="needs groups"):
        weight_mask(scores, 0.5, scope="layer")


def test_row_and_tensor_scope():
    s = {"w": torch.tensor([[3.0, 1.0, 2.0, 2.0], [0.0, 0.0, 0.0, 5.0]]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    m = weight_mask(s, 0.5, scope="row")
    assert m["w"].tolist() == [[True, False, True, False], [True, False, False, True]]
    assert m["b"].tolist() == [False, False, True, True]
    t = weight_mask(s, 0.25, scope="tensor")
    assert [int(t[n].sum()) for n in s] == [2, 1]


def test_invalid_inputs():
    s = random_scores()
    with pytest.raises(ValueError, match="density"):
        weight_mask(s, 1.5)
    with pytest.raises(ValueError, match="scope"):
        weight_mask(s, 0.5, scope="bogus")
    s["t0"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        weight_mask(s, 0.5)


def test_save_load_roundtrip(tmp_path):
    model = tiny_model()
    scores = {n: p.detach().abs() for n, p in model.named_parameters()}
    m = weight_mask(scores, 0.3)
    path = save_mask(m, tmp_path / "sub" / "mask.safetensors", metadata={"method": "magnitude", "density": 0.3})
    back = load_mask(path)
    assert equal(m, back)
    assert masking.mask_metadata(path)["method"] == "magnitude"
    assert check_mask(back, model, strict=True) == []
    with pytest.raises(FileNotFoundError, match="no mask file"):
        load_mask(tmp_path / "missing.safetensors")
    wrong = dict(back)
    wrong["model.norm.weight"] = torch.ones(3, dtype=torch.bool)
    wrong["not.a.param"] = torch.ones(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape mismatches.*|names not in the model"):
        check_mask(wrong, model)
    partial = {n: back[n] for n in list(back)[:2]}
    assert len(check_mask(partial, model)) == len(back) - 2
    with pytest.raises(ValueError, match="not covered"):
        check_mask(partial, model, strict=True)


def test_save_mask_is_atomic(tmp_path, monkeypatch):
    """A writer that dies half-way leaves the previous mask file intact and no temporary file."""
    m = {"w": torch.tensor([True, False, True])}
    path = save_mask(m, tmp_path / "mask.safetensors", metadata={"density": torch.tensor(0.5)})
    assert masking.mask_metadata(path)["density"] == "0.5"  # non-string metadata stored as JSON

    def torn_write(filename, *args):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(storage, "_write_safetensors", torn_write)
    with pytest.raises(OSError, match="disk full"):
        save_mask({"w": torch.tensor([False, False, False])}, path)
    assert equal(load_mask(path), m)
    assert [f.name for f in tmp_path.iterdir()] == ["mask.safetensors"]


def _train(model, mask, *, weight_decay, steps=3, lr=1e-2):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    b = batch()
    for _ in range(steps):
        opt.zero_grad()
        loss = answer_nll(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        apply_mask_to_gradients(model, mask)
        opt.step()


def test_masked_training_leaves_masked_weights_unchanged():
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = weight_mask({n: p.detach().abs() for n, p in model.named_parameters()}, 0.5)
    _train(model, mask, weight_decay=0.0)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach()[~mask[n]], before[n][~mask[n]])  # exactly unchanged
    changed = sum(int((p.detach() != before[n])[mask[n]].sum()) for n, p in model.named_parameters())
    assert changed > 0.9 * total(mask)


def test_decoupled_weight_decay_still_shrinks_masked_weights():
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = weight_mask({n: p.detach().abs() for n, p in model.named_parameters()}, 0.5)
    lr, wd, steps = 1e-2, 0.1, 3
    _train(model, mask, weight_decay=wd, steps=steps, lr=lr)
    for n, p in model.named_parameters():
        # zero gradient -> zero Adam update; only p <- p - lr*wd*p remains
        torch.testing.assert_close(p.detach()[~mask[n]], before[n][~mask[n]] * (1 - lr * wd) ** steps)


def test_masked_direction_and_overlap():
    d = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    m = {"a": torch.tensor([True, False, True, False])}
    out = masked_direction(d, m)
    assert out["a"].tolist() == [0.0, 0.0, 2.0, 0.0] and out["b"] is d["b"]
    a = {"x": torch.tensor([1, 1, 0, 0], dtype=torch.bool)}
    b = {"x": torch.tensor([0, 1, 1, 0], dtype=torch.bool)}
    assert mask_overlap(a, b) == pytest.approx(1 / 3)
    assert mask_overlap(a, a) == 1.0
    with pytest.raises(ValueError):
        mask_overlap(a, {"y": a["x"]})


def test_module_types():
    model = tiny_model()
    types = {n: module_subtype(n, model) for n, _ in model.named_parameters()}
    assert types["model.embed_tokens.weight"] == "embed"
    assert types["model.layers.0.self_attn.q_proj.weight"] == "attn.q"
    assert types["model.layers.1.self_attn.o_proj.weight"] == "attn.o"
    assert types["model.layers.0.mlp.gate_proj.weight"] == "mlp.gate"
    assert types["model.layers.0.mlp.down_proj.weight"] == "mlp.down"
    assert types["model.layers.0.input_layernorm.weight"] == "norm"
    assert types["model.norm.weight"] == "norm"
    assert types["lm_head.weight"] == "lm_head"
    assert all(module_type(n, model) == t.split(".")[0] for n, t in types.items())
    # name-only rules agree on this model, and cover GPT-2 style names
    assert all(module_subtype(n) == t for n, t in types.items())
    assert module_subtype("transformer.h.0.attn.c_attn.weight") == "attn.qkv"
    assert module_subtype("transformer.h.0.mlp.c_proj.weight") == "mlp.down"
    assert module_subtype("transformer.h.0.ln_1.weight") == "norm"
    m = weight_mask({n: p.detach().abs() for n, p in model.named_parameters()}, 0.2)
    df = mask_summary(m, model)
    assert {"all", "group", "module_type"} == set(df.view)
    assert set(df[df.view == "module_type"].name) == set(types.values())
    assert df[df.view == "all"].kept.item() == total(m)
    assert df[df.view == "module_type"].kept.sum() == total(m)


def test_masked_geffect_density_one_equals_dense():
    from geffect.effect import gradient_effect
    from geffect.masking import masked_geffect

    model = tiny_model()

    class NLL:  # a minimal objective: (model, inputs, ref_model) -> object with .loss
        def __call__(self, model, inputs, ref_model=None):
            b = inputs["forget"]
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            return type("Out", (), {"loss": answer_nll(logits, b["labels"]).mean()})()

    inputs = {"forget": batch(bsz=2, seed=3)}
    probes = {"forget": batch(bsz=2, seed=4), "retain": batch(bsz=2, seed=5)}
    full = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    df = masked_geffect(model, NLL(), inputs, probes, full)
    assert list(df.probe) == ["forget", "retain"]
    assert (df.masked - df.dense).abs().max() <= 1e-6 * df.dense.abs().max()
    dense = gradient_effect(model, NLL(), inputs, probes["retain"]).total
    assert df.dense.iloc[1] == pytest.approx(float(dense), rel=1e-4)
    # a sparse mask: masked G-effect = <grad R(D), mask * d> by hand
    mask = weight_mask({n: p.detach().abs() for n, p in model.named_parameters()}, 0.3)
    df = masked_geffect(model, NLL(), inputs, {"retain": probes["retain"]}, mask)
    params = dict(model.named_parameters())
    d = torch.autograd.grad(NLL()(model, inputs).loss, list(params.values()))
    b = probes["retain"]
    r = answer_nll(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]).mean()
    gr = torch.autograd.grad(r, list(params.values()))
    ref = sum(float((x * y * mask[n]).sum()) for n, x, y in zip(params, gr, d))
    assert df[df.probe == "retain"].masked.item() == pytest.approx(ref, rel=1e-4, abs=1e-7)
