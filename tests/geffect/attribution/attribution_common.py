"""The tiny float64 model, calibration batches and per-instance reference shared by the tests of geffect.attribution."""
from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from geffect.losses import answer_nll


def tiny_model(dtype=torch.float64, tie=False, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=37, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                      tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).to(dtype)


def make_batches(n_batches=2, bsz=3, T=9, seed=1):
    """Right-padded batches with a 3-token prompt (labels -100) and varying lengths."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(1, 37, (bsz, T), generator=g)
        lengths = torch.randint(5, T + 1, (bsz,), generator=g)
        am = (torch.arange(T)[None] < lengths[:, None]).long()
        labels = ids.clone()
        labels[:, :3] = -100
        labels[am == 0] = -100
        ids[am == 0] = 0
        out.append({"input_ids": ids, "attention_mask": am, "labels": labels})
    return out


def per_instance_grad_sum(model, batches):
    """Reference: Σ_i ∇R(x_i) by one autograd call per instance."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for b in batches:
        for i in range(b["input_ids"].shape[0]):
            logits = model(input_ids=b["input_ids"][i:i + 1], attention_mask=b["attention_mask"][i:i + 1]).logits
            loss = answer_nll(logits, b["labels"][i:i + 1]).sum()
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    total[n] += g
            count += 1
    return total, count


def rel_err(scores, ref):
    """Normwise relative error over all tensors: ||s - ref|| / ||ref|| (Frobenius, float64)."""
    num = sum(float((scores[n].double() - ref[n]).pow(2).sum()) for n in ref)
    den = sum(float(ref[n].pow(2).sum()) for n in ref)
    return (num / den) ** 0.5


def assert_close(scores, ref):
    """float64 model: float64 scores, equal to the float64 reference up to rounding."""
    assert set(scores) == set(ref)
    for n in ref:
        assert scores[n].dtype == torch.float64 and scores[n].shape == ref[n].shape
        torch.testing.assert_close(scores[n], ref[n], rtol=1e-10, atol=1e-12 * float(ref[n].abs().max()) + 1e-300)
    assert rel_err(scores, ref) < 1e-12
