"""Model, calibration data and synthetic scores shared by tests/geffect/sharded/test_sharded_attribution.py and its
torchrun driver (tests/geffect/sharded/sharded_attribution_driver.py): both sides build exactly the same values."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from geffect.losses import IGNORE_INDEX

METHODS = ("wagle", "snip", "gradient", "magnitude", "random", "wanda")
DENSITIES = (0.0, 0.1, 0.3, 0.77, 1.0)


def tiny_model() -> LlamaForCausalLM:
    """float64 random-init Llama; vocabulary 37 (odd, so the two shards of the embedding differ)."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).double().eval()


def calibration():
    """3 forget batches (sizes 3, 2, 1) and 2 retain batches, right-padded, 3-token prompts."""
    g = torch.Generator().manual_seed(1)

    def batch(bsz, T=9):
        ids = torch.randint(1, 37, (bsz, T), generator=g)
        lengths = torch.randint(5, T + 1, (bsz,), generator=g)
        am = (torch.arange(T)[None] < lengths[:, None]).long()
        labels = ids.clone()
        labels[:, :3] = IGNORE_INDEX
        labels[am == 0] = IGNORE_INDEX
        ids[am == 0] = 0
        return {"input_ids": ids, "attention_mask": am, "labels": labels}

    return [batch(3), batch(2), batch(1)], [batch(2), batch(3)]


def synthetic_scores() -> dict[str, torch.Tensor]:
    """float32 scores quantised to 5 values (heavy ties across tensors and shards), with -0.0
    and +0.0, odd row counts, a tensor with one row (the second shard is empty), a plain
    (replicated) and a Replicate() tensor."""
    g = torch.Generator().manual_seed(3)
    shapes = {"a": (7, 3), "b": (5,), "one_row": (1, 4), "plain": (3, 2), "c": (4, 2, 2), "replicated": (3,),
              "d": (9, 1)}
    out = {n: (torch.rand(s, generator=g) * 5).floor() / 4 - 0.5 for n, s in shapes.items()}
    out["a"][0, :2] = torch.tensor([-0.0, 0.0])
    return out
