"""Helpers to check the fast G-effect engine against the reference on your own model.

The naive reference (``engine="loop"``: one backward per instance, plain autograd) ships with
the library, so a user can verify the ghost engine on any model before trusting it::

    from geffect.testing import compare_engines, random_batch, random_direction
    err = compare_engines(model, random_batch(model.config.vocab_size), random_direction(model))
    assert err < 1e-4  # float32; use a float64 copy of the model for ~1e-12

and one layer's ghost rule (:mod:`geffect.rules`, or the fallback for a module without one)
against the micro-batch reference (batch size 1, plain autograd), e.g. for a rule of your own::

    from geffect.testing import compare_rule
    layer = MyLayer(...).double()
    err = compare_rule(layer, (torch.randn(4, 7, 16, dtype=torch.float64),))
    assert err < 1e-10

The tiny random-init model builders are used by the test suite (no download).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from geffect.engine import per_instance_dots
from geffect.losses import IGNORE_INDEX
from geffect.rules import batch_sum, fallback_tangents, get_rule

__all__ = ["FAMILIES", "tiny_causal_lm", "random_batch", "random_direction", "relative_error", "compare_engines",
           "compare_rule", "rule_dots", "rule_reference"]

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
    if not ref.numel():  # an empty batch: nothing to differ
        return 0.0
    floor = max(float(ref.abs().max()), 1e-300) * 1e-12
    return float(((fast.double() - ref).abs() / ref.abs().clamp_min(floor)).max())


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


# --------------------------------------------------------------------------- one layer's rule
def rule_dots(
    layer: nn.Module, inputs: tuple, backprops: torch.Tensor, directions: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """What the ghost engine computes for one call of ``layer``: ``{local name: (B,)}`` per-instance
    inner products ``<grad_p sum_t <y_{i,t}, backprops_{i,t}>, directions[p]>``.

    The layer's registered rule (:func:`geffect.rules.get_rule`) with ``backprops`` and the
    directions in ``backprops``' dtype, as the engine hands them over; for a module without a
    rule, the forward-mode fallback (:func:`geffect.rules.fallback_tangents`) contracted with
    ``backprops``. ``layer`` must have one tensor output.
    """
    rule = get_rule(layer)
    if rule is not None:
        return rule(layer, inputs, backprops, {n: d.to(backprops.dtype) for n, d in directions.items()})
    tangents = fallback_tangents(layer, inputs, {}, dict(directions))
    return {n: batch_sum(backprops * t[0].detach().to(backprops.dtype)) for n, t in tangents.items()}


def rule_reference(
    layer: nn.Module, inputs: tuple, backprops: torch.Tensor, directions: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The micro-batch reference of :func:`rule_dots`: each instance alone (batch size 1), plain autograd.

    For instance i: ``s_i = sum(layer(*inputs[i:i+1]) * backprops[i:i+1])``, then
    ``<grad_p s_i, directions[p]>`` for each parameter ``p`` the layer owns directly, in
    ``backprops``' dtype. Tensor inputs are split along dim 0; other inputs are passed as they are.
    """
    own = dict(layer.named_parameters(recurse=False))
    names = list(directions)
    B = backprops.shape[0]
    out = {n: torch.zeros(B, dtype=backprops.dtype, device=backprops.device) for n in names}
    for i in range(B):
        args = tuple(a[i:i + 1] if isinstance(a, torch.Tensor) else a for a in inputs)
        with torch.enable_grad():
            y = layer(*args)  # (1, ..., d_out)
            s = (y * backprops[i:i + 1].to(y.dtype)).sum()
            grads = torch.autograd.grad(s, [own[n] for n in names], allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                out[n][i] = (g.to(backprops.dtype) * directions[n].to(backprops.dtype)).sum()
    return out


def compare_rule(
    layer: nn.Module,
    inputs: tuple,
    backprops: torch.Tensor | None = None,
    directions: Mapping[str, torch.Tensor] | None = None,
    *,
    seed: int = 0,
) -> float:
    """Relative error (:func:`relative_error`) of :func:`rule_dots` against :func:`rule_reference`.

    ``backprops`` default to random values shaped like ``layer(*inputs)``, ``directions`` to random
    ones for every parameter the layer owns directly (float64 draws cast to the parameter's
    dtype; backprops in float64 for float64 layers, else float32, the engine's compute dtype).
    """
    g = torch.Generator().manual_seed(seed)
    own = dict(layer.named_parameters(recurse=False))
    if directions is None:
        directions = {n: torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) for n, p in own.items()}
    if backprops is None:
        with torch.no_grad():
            shape = layer(*inputs).shape
        cdtype = torch.float64 if any(p.dtype == torch.float64 for p in own.values()) else torch.float32
        backprops = torch.randn(shape, generator=g, dtype=torch.float64).to(cdtype)
    fast, ref = rule_dots(layer, inputs, backprops, directions), rule_reference(layer, inputs, backprops, directions)
    if set(fast) != set(ref):
        raise AssertionError(f"the rule returned {sorted(fast)}, the reference has {sorted(ref)}")
    for n in ref:
        if fast[n].shape != ref[n].shape:
            raise AssertionError(f"{n}: the rule returned shape {tuple(fast[n].shape)}, expected {tuple(ref[n].shape)}")
    if not ref:
        return 0.0
    return relative_error(torch.stack([fast[n] for n in ref], 1), torch.stack([ref[n] for n in ref], 1))  # (B, P)
