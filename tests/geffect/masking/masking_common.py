"""Models, batches, scores and the full-sort reference shared by the tests of geffect.masking."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


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
