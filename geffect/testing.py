"""Helpers to check the fast G-effect engine against the reference on your own model.

The naive reference (``engine="loop"``: one backward per instance, plain autograd) ships with
the library, so a user can verify the ghost engine on any model before trusting it::

    from geffect.testing import compare_engines, random_batch, random_direction
    err = compare_engines(model, random_batch(model.config.vocab_size), random_direction(model))
    assert err < 1e-4  # float32; use a float64 copy of the model for ~1e-12

The tiny random-init model builders are used by the test suite (no download).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from geffect.engine import per_instance_dots
from geffect.losses import IGNORE_INDEX

__all__ = ["FAMILIES", "tiny_causal_lm", "random_batch", "random_direction", "relative_error", "compare_engines"]

FAMILIES = ("llama", "gpt2", "gpt_neox", "phi", "qwen2", "mistral")


def tiny_causal_lm(
    family: str = "llama",
    *,
    tied: bool = False,
    vocab_size: int = 48,
    hidden: int = 16,
    layers: int = 3,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> nn.Module:
    """A random-init Hugging Face causal LM of ``family`` built from a config (no download)."""
    import transformers as tf  # heavy, and optional for geffect: only these test models need it

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family == "gpt2":
        config = tf.GPT2Config(n_layer=layers, n_embd=hidden, n_head=2, n_positions=64, **common)
        cls = tf.GPT2LMHeadModel
    else:
        sizes = dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=2, intermediate_size=2 * hidden)
        config_cls, cls = {
            "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
            "gpt_neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM),
            "phi": (tf.PhiConfig, tf.PhiForCausalLM),
            "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
            "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
        }[family]
        if family in ("llama", "qwen2", "mistral"):
            sizes["num_key_value_heads"] = 1  # grouped-query attention
        config = config_cls(**sizes, **common)
    model = cls(config)
    return model.to(dtype)


def random_batch(
    vocab_size: int,
    *,
    batch_size: int = 3,
    seq_len: int = 10,
    prompt_len: int = 3,
    pad_id: int = 0,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Right-padded batch with masked prompts; row i is shortened by ``2 * (i % 3)`` padding tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (batch_size, seq_len), generator=g)  # (B, T)
    mask = torch.ones_like(ids)
    for i in range(batch_size):
        pad = min(2 * (i % 3), seq_len - prompt_len - 1)
        if pad:
            mask[i, seq_len - pad :] = 0
            ids[i, seq_len - pad :] = pad_id
    labels = ids.clone()
    labels[:, :prompt_len] = IGNORE_INDEX
    labels[mask == 0] = IGNORE_INDEX
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "index": torch.arange(batch_size)}


def random_direction(model: nn.Module, *, drop: float = 0.0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random direction over the model's parameters; each name is left out with probability ``drop``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in model.named_parameters():
        if drop and float(torch.rand((), generator=g)) < drop:
            continue
        out[name] = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
    return out


def relative_error(fast: torch.Tensor, reference: torch.Tensor) -> float:
    """max_ij |fast - ref| / |ref| (entries with |ref| below 1e-12 * max|ref| use that floor)."""
    ref = reference.double()
    floor = max(float(ref.abs().max()), 1e-300) * 1e-12
    return float(((fast.double() - ref).abs() / ref.abs().clamp_min(floor)).max()) if ref.numel() else 0.0


def compare_engines(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    direction: Mapping[str, torch.Tensor],
    *,
    loss="answer_nll",
    groups: Mapping[str, Sequence[str]] | None = None,
    engine: str = "ghost",
) -> float:
    """Relative error of ``engine`` against the per-instance reference (``engine="loop"``)."""
    fast = per_instance_dots(model, batch, direction, loss=loss, groups=groups, engine=engine)
    ref = per_instance_dots(model, batch, direction, loss=loss, groups=groups, engine="loop")
    return relative_error(fast, ref)
