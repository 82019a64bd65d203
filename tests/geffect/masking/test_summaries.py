"""geffect.masking.summaries: kept fraction per group and module type, and the overlap of two masks."""
from __future__ import annotations

import pytest
import torch

from geffect.masking import mask_overlap, mask_summary, module_subtype, module_type, weight_mask
from masking_common import tiny_model, total


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


def test_mask_overlap():
    a = {"x": torch.tensor([1, 1, 0, 0], dtype=torch.bool)}
    b = {"x": torch.tensor([0, 1, 1, 0], dtype=torch.bool)}
    assert mask_overlap(a, b) == pytest.approx(1 / 3)
    assert mask_overlap(a, a) == 1.0
    with pytest.raises(ValueError):
        mask_overlap(a, {"y": a["x"]})
