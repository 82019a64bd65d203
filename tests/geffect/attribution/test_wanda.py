"""Wanda scores (geffect/attribution/wanda.py) against |W_ij| · ‖X_j‖₂ from hooked inputs, Linear and GPT-2 Conv1D."""
from __future__ import annotations

import torch

from attribution_common import make_batches
from geffect.attribution import attribute_weights, linear_weights


def test_wanda_matches_direct(setup):
    model, forget, *_ = setup
    scores = attribute_weights(model, forget, method="wanda")
    modules = linear_weights(model)
    assert set(scores) == set(modules) and "lm_head.weight" not in scores
    assert all(".layers." in n for n in scores)  # decoder Linear layers only
    for n, mod in modules.items():
        feats = []
        h = mod.register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
        with torch.no_grad():
            for b in forget:
                model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        h.remove()
        X = torch.cat([f[b["attention_mask"].bool()] for f, b in zip(feats, forget)])  # (tokens, in)
        ref = mod.weight.detach().abs() * X.norm(dim=0)[None, :]
        torch.testing.assert_close(scores[n].double(), ref, rtol=1e-5, atol=1e-9)


def test_wanda_gpt2_conv1d_and_module_types():
    from transformers import GPT2Config, GPT2LMHeadModel

    from geffect.masking import module_subtype

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=37, n_embd=16, n_layer=1, n_head=2, n_positions=32)).double().eval()
    forget = make_batches(n_batches=1)
    scores = attribute_weights(model, forget, method="wanda")
    assert set(scores) == {"transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight",
                           "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight"}
    mod = model.transformer.h[0].mlp.c_fc  # Conv1D: weight (in, out), y = x @ W + b
    feats = []
    h = mod.register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
    with torch.no_grad():
        model(input_ids=forget[0]["input_ids"], attention_mask=forget[0]["attention_mask"])
    h.remove()
    X = feats[0][forget[0]["attention_mask"].bool()]  # (tokens, in)
    ref = mod.weight.detach().abs() * X.norm(dim=0)[:, None]
    torch.testing.assert_close(scores["transformer.h.0.mlp.c_fc.weight"].double(), ref, rtol=1e-5, atol=1e-9)
    types = {n: module_subtype(n, model) for n, _ in model.named_parameters()}
    assert types["transformer.wte.weight"] == "embed" and types["transformer.wpe.weight"] == "embed"
    assert types["transformer.h.0.attn.c_attn.weight"] == "attn.qkv"
    assert types["transformer.h.0.attn.c_proj.weight"] == "attn.o"
    assert types["transformer.h.0.mlp.c_proj.bias"] == "mlp.down"
    assert types["transformer.h.0.ln_1.weight"] == "norm" and types["transformer.ln_f.bias"] == "norm"
