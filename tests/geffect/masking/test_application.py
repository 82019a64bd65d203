"""geffect.masking.application: masked gradients (masked training), masked directions, the masked G-effect."""
from __future__ import annotations

import pytest
import torch

from geffect.losses import answer_nll
from geffect.masking import apply_mask_to_gradients, masked_direction, weight_mask
from masking_common import batch, tiny_model, total


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


def test_masked_direction():
    d = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    m = {"a": torch.tensor([True, False, True, False])}
    out = masked_direction(d, m)
    assert out["a"].tolist() == [0.0, 0.0, 2.0, 0.0] and out["b"] is d["b"]
