"""geffect.groups: structural fine groups on six families, coarse views, layer buckets, module types."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from geffect.groups import (LAYER_BUCKETS, MODULE_SUBTYPES, MODULE_TYPES, aggregate, coarse_groups, find_block_list,
                            layer_bucket, layer_buckets, layer_index, module_subtype, module_type, parameter_groups)
from geffect.testing import FAMILIES, tiny_causal_lm


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tied", [False, True])
def test_fine_groups_cover_every_parameter_once(family, tied):
    model = tiny_causal_lm(family, tied=tied, layers=3)
    groups = parameter_groups(model)
    names = [n for ns in groups.values() for n in ns]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    assert list(groups)[:5] == ["embed", "layer.0", "layer.1", "layer.2", "final_norm"]
    assert "other" not in groups
    assert groups["final_norm"] and all(groups[f"layer.{i}"] for i in range(3))
    emb = model.get_input_embeddings().weight
    emb_name = next(n for n, p in model.named_parameters() if p is emb)
    assert emb_name in groups["embed"]
    if tied:  # the tied weight appears once, under embed
        assert model.get_output_embeddings().weight is emb
        assert all(dict(model.named_parameters())[n] is not emb for n in groups["lm_head"])
    else:
        assert groups["lm_head"]
    if family == "gpt2":
        assert len(groups["embed"]) == 2  # token + position embeddings


def test_block_list_is_found_structurally():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ff = nn.Linear(4, 4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(10, 4)
            self.heads = nn.ModuleList([nn.Linear(4, 4), nn.ReLU()])  # mixed classes: not blocks
            self.stack = nn.ModuleList([Block() for _ in range(3)])
            self.scale = nn.Parameter(torch.ones(4))  # leftover
            self.out_norm = nn.LayerNorm(4)
            self.out = nn.Linear(4, 10)

    net = Net()
    assert find_block_list(net)[0] == "stack"
    groups = parameter_groups(net)
    assert groups["embed"] == ["tok.weight"]
    assert groups["final_norm"] == ["out_norm.weight", "out_norm.bias"]
    assert groups["lm_head"] == ["out.weight", "out.bias"]
    assert set(groups["other"]) == {"heads.0.weight", "heads.0.bias", "scale"}
    with pytest.raises(ValueError, match="explicit groups"):
        parameter_groups(nn.Linear(2, 2))


def test_thirds_view_and_aggregate():
    model = tiny_causal_lm("llama", layers=4)
    groups = parameter_groups(model)
    thirds = coarse_groups(groups, "thirds")
    assert list(thirds) == ["embed", "shallow", "middle", "deep", "lm"]
    assert set(thirds["shallow"]) == set(groups["layer.0"] + groups["layer.1"])
    assert set(thirds["middle"]) == set(groups["layer.2"]) and set(thirds["deep"]) == set(groups["layer.3"])
    assert set(thirds["lm"]) == set(groups["final_norm"] + groups["lm_head"])
    m = torch.arange(2 * len(groups), dtype=torch.float64).reshape(2, -1)  # (N, G)
    agg = aggregate(m, groups, thirds)  # (N, 5)
    assert torch.allclose(agg.sum(1), m.sum(1))
    assert torch.allclose(agg[:, 1], m[:, 1] + m[:, 2])


@pytest.mark.parametrize("family", FAMILIES)
def test_attn_mlp_view(family):
    model = tiny_causal_lm(family, layers=2)
    groups = parameter_groups(model)
    view = coarse_groups(groups, "attn_mlp", model=model)
    assert view == coarse_groups(groups, "attn_mlp")  # names agree with module classes here
    assert "other" not in view
    assert list(view) == ["embed", "attn", "mlp", "norm", "lm_head"]
    assert view["attn"] and view["mlp"] and view["norm"] and view["lm_head"]
    assert sorted(n for ns in view.values() for n in ns) == sorted(n for ns in groups.values() for n in ns)
    assert all(module_type(n, model) == t for t, names in view.items() for n in names)  # one taxonomy
    with pytest.raises(ValueError, match="split across"):
        aggregate(torch.zeros(1, len(groups)), groups, view)


def test_layer_bucket_thirds():
    assert [layer_bucket(f"layer.{i}", 12) for i in range(12)] == ["shallow"] * 4 + ["middle"] * 4 + ["deep"] * 4
    assert [layer_bucket(f"layer.{i}", 4) for i in range(4)] == ["shallow", "shallow", "middle", "deep"]
    assert [layer_bucket(f"layer.{i}", 2) for i in range(2)] == ["shallow", "middle"]
    assert layer_bucket("layer.0", 1) == "shallow"
    assert layer_bucket("embed", 12) == "embed"
    assert layer_bucket("final_norm", 12) == layer_bucket("lm_head", 12) == "lm"
    assert layer_bucket("other", 12) == "other"
    assert layer_index("layer.10") == 10 and layer_index("lm_head") is None and layer_index("layer.x") is None
    with pytest.raises(ValueError, match="num_layers"):
        layer_bucket("layer.3", 3)
    names = ["embed", "layer.0", "layer.1", "layer.2", "final_norm", "lm_head", "other"]
    assert layer_buckets(names) == {"embed": "embed", "layer.0": "shallow", "layer.1": "middle", "layer.2": "deep",
                                    "final_norm": "lm", "lm_head": "lm", "other": "other"}
    assert set(layer_buckets(names).values()) - {"other"} == set(LAYER_BUCKETS)


def test_thirds_view_is_layer_buckets():
    groups = parameter_groups(tiny_causal_lm("gpt2", layers=5))
    groups["other"] = ["extra.weight"]
    thirds = coarse_groups(groups, "thirds")
    assert list(thirds) == [*LAYER_BUCKETS, "other"]
    bucket = layer_buckets(groups)
    assert thirds == {b: [n for g, ns in groups.items() if bucket[g] == b for n in ns] for b in thirds}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tied", [False, True])
def test_module_subtypes_structural_and_by_name(family, tied):
    model = tiny_causal_lm(family, tied=tied, layers=2)
    names = [n for n, _ in model.named_parameters()]
    types = {n: module_subtype(n, model) for n in names}
    assert set(types.values()) <= set(MODULE_SUBTYPES)
    assert {module_type(n, model) for n in names} <= set(MODULE_TYPES)
    assert types == {n: module_subtype(n) for n in names}  # the names of these families say the same
    assert "other" not in types.values() and "attn.other" not in types.values() and "mlp.other" not in types.values()
    emb = model.get_input_embeddings().weight
    assert types[next(n for n, p in model.named_parameters() if p is emb)] == "embed"
    head = [n for n, t in types.items() if t == "lm_head"]
    assert head == parameter_groups(model)["lm_head"]  # a tied weight counts as embed
    per_layer = [sorted({t for n, t in types.items() if f".{i}." in n}) for i in range(2)]
    assert per_layer[0] == per_layer[1]
    assert {t.split(".")[0] for t in per_layer[0]} == {"attn", "mlp", "norm"}
    assert {"attn.o", "mlp.down"} <= set(per_layer[0])


def test_module_subtype_uses_structure_when_names_are_silent():
    class Mixer(nn.Module):  # an attention by its class name only
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.q_norm = nn.LayerNorm(4)

    Mixer.__name__ = "CustomSelfAttention"

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = Mixer()
            self.fc1 = nn.Linear(4, 8)  # OPT-style MLP projections directly in the block
            self.fc2 = nn.Linear(8, 4)
            self.scale = nn.Parameter(torch.ones(4))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(10, 4)
            self.blocks = nn.ModuleList([Block(), Block()])
            self.head = nn.Linear(4, 10, bias=False)

        def get_input_embeddings(self):
            return self.tok

        def get_output_embeddings(self):
            return self.head

    net = Net()
    t = {n: module_subtype(n, net) for n, _ in net.named_parameters()}
    assert t["tok.weight"] == "embed" and t["head.weight"] == "lm_head"
    assert t["blocks.0.mixer.a.weight"] == "attn.other"  # by the class name
    assert module_subtype("blocks.0.mixer.a.weight") == "other"  # the name alone says nothing
    assert t["blocks.0.mixer.q_norm.weight"] == module_subtype("blocks.0.mixer.q_norm.weight") == "norm"
    assert t["blocks.1.fc1.bias"] == "mlp.up" and t["blocks.1.fc2.weight"] == "mlp.down"
    assert t["blocks.0.scale"] == "other"
    assert module_type("blocks.0.mixer.a.weight", net) == "attn"
    view = coarse_groups(parameter_groups(net), "attn_mlp", model=net)
    assert view["attn"] == ["blocks.0.mixer.a.weight", "blocks.0.mixer.a.bias",
                            "blocks.1.mixer.a.weight", "blocks.1.mixer.a.bias"]
    assert view["other"] == ["blocks.0.scale", "blocks.1.scale"] and view["lm_head"] == ["head.weight"]


def test_unknown_scheme():
    with pytest.raises(ValueError, match="thirds"):
        coarse_groups({"embed": []}, "halves")


def test_module_groups_split_every_layer_and_sum_back():
    from geffect import layer_buckets, layer_index, layer_of, module_groups, parameter_groups
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                      num_key_value_heads=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    fine, split = parameter_groups(model), module_groups(model)
    assert list(split)[:4] == ["embed", "layer.0.attn", "layer.0.mlp", "layer.0.norm"]
    for group, names in fine.items():  # the sub-groups of a block are exactly its parameters
        parts = [n for g, ns in split.items() if layer_of(g) == group for n in ns]
        assert sorted(parts) == sorted(names), group
    assert all(".self_attn." in n for n in split["layer.1.attn"]) and all(".mlp." in n for n in split["layer.2.mlp"])
    assert all("layernorm" in n for n in split["layer.0.norm"])
    assert layer_index("layer.2.mlp") == 2 and layer_of("lm_head") == "lm_head"
    assert layer_buckets(split)["layer.2.attn"] == "deep" and layer_buckets(split)["layer.0.norm"] == "shallow"
