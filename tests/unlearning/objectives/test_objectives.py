"""Objectives vs direct, slow (loops over b and t) float64 computations on a tiny random model."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import transformers

from unlearning import objectives

TOL = 1e-10


# --------------------------------------------------------------------------- fixtures
def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(cfg).double().eval()


def make_batch(seed: int, B: int = 3, T: int = 10, prompts=(2, 3, 4), lengths=(10, 8, 7)) -> dict:
    """Right-padded batch: prompt tokens and padding carry label -100; an extra ``index`` key."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (B, T), generator=g)
    am = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100)
    for b in range(B):
        L = lengths[b]
        am[b, :L] = 1
        ids[b, L:] = 0
        labels[b, prompts[b]:L] = ids[b, prompts[b]:L]
    return {"input_ids": ids, "attention_mask": am, "labels": labels, "index": torch.arange(B) + 10 * seed}


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


@pytest.fixture(scope="module")
def ref_model():
    return tiny_model(1)


@pytest.fixture(scope="module")
def inputs():
    return {"forget": make_batch(1), "retain": make_batch(2), "idk": make_batch(3, lengths=(9, 10, 6))}


# --------------------------------------------------------------------------- slow references
def slow_logprobs(model, batch):
    """Nested lists: lp[b] = [(t, log p(labels[b,t]))] over answer tokens, via per-position log-softmax."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    out = []
    for b in range(logits.shape[0]):
        row = []
        for t in range(1, logits.shape[1]):
            y = int(batch["labels"][b, t])
            if y == -100:
                continue
            row.append((t, torch.log_softmax(logits[b, t - 1], dim=-1)[y]))
        out.append(row)
    return out


def slow_weighted(lp, weight_of):
    """−(1/|T|) Σ w ℓ with w = weight_of(b, t, p) detached; returns (loss, {(b,t): w})."""
    total, n, ws = 0.0, 0, {}
    for b, row in enumerate(lp):
        for t, l in row:
            w = float(weight_of(b, t, math.exp(float(l.detach()))))
            ws[(b, t)] = w
            total = total + w * l  # w * log p = −w ℓ
            n += 1
    return total / n, ws


def slow_retain_nll(model, batch):
    lp = slow_logprobs(model, batch)
    vals = [l for row in lp for _, l in row]
    return -sum(vals) / len(vals)


def slow_kl(model, ref_model, batch, tokens="answer"):
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    lq = model(**kw).logits
    with torch.no_grad():
        lp = ref_model(**kw).logits
    vals = []
    B, T, _ = lq.shape
    for b in range(B):
        for s in range(T):
            if tokens == "answer" and not (s + 1 < T and int(batch["labels"][b, s + 1]) != -100):
                continue
            p = torch.softmax(lp[b, s], -1)
            vals.append((p * (torch.log(p) - torch.log_softmax(lq[b, s], -1))).sum())  # Σ_v over the vocab
    return sum(vals) / len(vals)


def close(a, b, tol=TOL):
    a, b = (float(x.detach()) if torch.is_tensor(x) else float(x) for x in (a, b))
    return abs(a - b) <= tol * max(1.0, abs(b))


def check_weights(out, ws, batch):
    tw = out.token_weights
    assert tw.shape == batch["labels"].shape and not tw.requires_grad
    for b in range(tw.shape[0]):
        for t in range(tw.shape[1]):
            expect = ws.get((b, t), 0.0)
            assert close(tw[b, t], expect), (b, t, float(tw[b, t]), expect)


def grads(model, loss):
    params = [p for p in model.parameters()]
    return torch.autograd.grad(loss, params, allow_unused=True)


def check_grads(model, fast_loss, slow_loss):
    """Parameter gradients of both losses agree; returns the max relative error."""
    worst = 0.0
    for gf, gs in zip(grads(model, fast_loss), grads(model, slow_loss)):
        if gs is None:
            assert gf is None or float(gf.abs().max()) == 0.0
            continue
        err = float((gf - gs).abs().max()) / max(1.0, float(gs.abs().max()))
        assert err < TOL, err
        worst = max(worst, err)
    return worst


# --------------------------------------------------------------------------- token-weighted family
def p_weight(name, hp, ref_lp=None):
    if name in ("ga", "gd"):
        return lambda b, t, p: 1.0
    if name == "wga":
        return lambda b, t, p: p ** hp.get("beta", 5.0)
    if name == "simsat":
        return lambda b, t, p: p ** hp.get("beta", 1.0)
    if name == "simimp":
        return lambda b, t, p: (1 - p) ** hp.get("beta", 1.0)
    if name == "satimp":
        return lambda b, t, p: p ** hp.get("beta1", 5.0) * (1 - p) ** hp.get("beta2", 0.1)
    beta = hp.get("beta", 4.0)
    alpha = hp.get("alpha", 1.5) if name == "wtnpo" else 0.0

    def w(b, t, p):
        pr = math.exp(ref_lp[b][t])
        return 2 * p ** (beta + alpha) / (p**beta + pr**beta + 1e-5)

    return w


def slow_ref_dict(ref_model, batch):
    with torch.no_grad():
        lp = slow_logprobs(ref_model, batch)
    return [{t: float(l) for t, l in row} for row in lp]


@pytest.mark.parametrize(
    "name,hp",
    [
        ("ga", {}),
        ("gd", {}),
        ("wga", {}),
        ("wga", {"beta": 1.0}),
        ("simsat", {"beta": 2.0}),
        ("simimp", {"beta": 0.5}),
        ("satimp", {}),
        ("satimp", {"beta1": 1.0, "beta2": 2.0, "retain_loss": "none"}),
        ("tnpo", {}),
        ("wtnpo", {"beta": 2.0, "alpha": 0.5}),
    ],
)
def test_token_weighted_against_slow(name, hp, model, ref_model, inputs):
    obj = objectives.get(name, **hp)
    out = obj(model, inputs, ref_model=ref_model if obj.needs_reference else None)
    fb = inputs["forget"]
    ref_lp = slow_ref_dict(ref_model, fb) if name in ("tnpo", "wtnpo") else None
    slow_f, ws = slow_weighted(slow_logprobs(model, fb), p_weight(name, hp, ref_lp))
    total = obj.hparams["forget_weight"] * slow_f
    rl = obj.hparams["retain_loss"]
    if rl == "nll":
        slow_r = slow_retain_nll(model, inputs["retain"])
        total = total + obj.hparams["retain_weight"] * slow_r
        assert close(out.retain_loss, slow_r)
    else:
        assert out.retain_loss is None
    assert close(out.forget_loss, slow_f)
    assert close(out.loss, total)
    check_weights(out, ws, fb)
    assert out.token_logprobs is not None and not out.token_logprobs.requires_grad
    assert torch.equal(out.answer_mask, fb["labels"] != -100)
    check_grads(model, out.loss, total)


def test_defaults_and_retain_composition():
    assert objectives.get("gd").hparams["retain_loss"] == "nll"
    s = objectives.get("satimp").hparams
    assert (s["beta1"], s["beta2"], s["retain_loss"], s["retain_weight"]) == (5.0, 0.1, "nll", 0.1)
    assert objectives.get("ga").hparams["retain_loss"] == "none"


@pytest.mark.parametrize("name,kl_tokens", [("ga", "answer"), ("satimp", "all"), ("npo", "answer"), ("simnpo", "all")])
def test_kl_retain_composes(name, kl_tokens, model, ref_model, inputs):
    obj = objectives.get(name, retain_loss="kl", retain_weight=0.7, forget_weight=1.3, kl_tokens=kl_tokens)
    assert obj.needs_reference
    out = obj(model, inputs, ref_model=ref_model)
    slow_r = slow_kl(model, ref_model, inputs["retain"], kl_tokens)
    assert close(out.retain_loss, slow_r)
    assert close(out.loss, 1.3 * float(out.forget_loss.detach()) + 0.7 * float(slow_r.detach()))
    check_grads(model, out.retain_loss, slow_r)
    # the KL is zero against itself
    same = obj(model, inputs, ref_model=model)
    assert abs(float(same.retain_loss.detach())) < 1e-12


# --------------------------------------------------------------------------- NPO family
def test_npo_against_slow(model, ref_model, inputs):
    beta = 0.7
    obj = objectives.get("npo", beta=beta)
    out = obj(model, inputs, ref_model=ref_model)
    fb = inputs["forget"]
    lp = slow_logprobs(model, fb)
    ref = slow_ref_dict(ref_model, fb)
    terms, ws = [], {}
    for b, row in enumerate(lp):
        nll = -sum(l for _, l in row)
        nll_ref = -sum(ref[b].values())
        terms.append(-(2 / beta) * torch.nn.functional.logsigmoid(beta * (nll - nll_ref)))
        pb, pr = math.exp(-float(nll.detach())), math.exp(-nll_ref)
        w = 2 * pb**beta / (pb**beta + pr**beta)
        assert close(out.instance_weights[b], w)
        for t, _ in row:
            ws[(b, t)] = w
    slow = sum(terms) / len(terms)
    assert close(out.loss, slow) and out.retain_loss is None
    check_weights(out, ws, fb)
    check_grads(model, out.loss, slow)


def test_simnpo_against_slow(model, inputs):
    beta, delta = 2.0, 0.3
    obj = objectives.get("simnpo", beta=beta, delta=delta)
    assert not obj.needs_reference
    out = obj(model, inputs)
    lp = slow_logprobs(model, inputs["forget"])
    terms = []
    for b, row in enumerate(lp):
        m = -sum(l for _, l in row) / len(row)
        terms.append(-(2 / beta) * torch.nn.functional.logsigmoid(beta * (m - delta)))
        assert close(out.instance_weights[b], 2 / (1 + math.exp(-beta * (delta - float(m.detach())))))
    slow = sum(terms) / len(terms)
    assert close(out.loss, slow)
    check_grads(model, out.loss, slow)


# --------------------------------------------------------------------------- flags and errors
def test_needs_reference_flags():
    need = {"npo", "tnpo", "wtnpo", "dpo", "rmu"}
    for name in objectives.available():
        assert objectives.get(name).needs_reference == (name in need), name
        assert objectives.get(name, retain_loss="kl").needs_reference, name


def test_errors(model, inputs):
    with pytest.raises(ValueError, match="valid names: .*satimp"):
        objectives.get("nope")
    with pytest.raises(ValueError, match="accepted keywords: .*beta1"):
        objectives.get("satimp", beta=3)
    with pytest.raises(ValueError, match="retain_loss"):
        objectives.get("ga", retain_loss="l2")
    with pytest.raises(ValueError, match="granularity"):
        objectives.get("satimp", granularity="sentence")
    with pytest.raises(ValueError, match="reference"):
        objectives.get("npo")(model, inputs)
    with pytest.raises(ValueError, match="retain"):
        objectives.get("gd")(model, {"forget": inputs["forget"]})
    empty = dict(inputs["forget"], labels=torch.full_like(inputs["forget"]["labels"], -100))
    with pytest.raises(ValueError, match="no answer tokens"):
        objectives.get("ga")(model, {"forget": empty})


def test_nonfinite_loss_raises(inputs):
    class NaNModel(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            B, T = input_ids.shape
            return transformers.modeling_outputs.CausalLMOutput(logits=torch.full((B, T, 64), float("nan")))

    with pytest.raises(FloatingPointError, match="'satimp'.*index"):
        objectives.get("satimp", retain_loss="none")(NaNModel(), inputs)


def test_model_called_without_extra_keys(inputs):
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = tiny_model(0)

        def forward(self, **kw):
            seen.update(kw)
            return self.inner(**kw)

    objectives.get("ga")(Spy(), inputs)
    assert set(seen) == {"input_ids", "attention_mask"}


# --------------------------------------------------------------------------- training sanity
@pytest.mark.parametrize("name", ["ga", "satimp"])
def test_sgd_steps_lower_forget_likelihood(name, inputs):
    m = tiny_model(3).float().train()
    fb = {k: v for k, v in inputs["forget"].items()}
    obj = objectives.get(name, retain_loss="none", **({"beta1": 1.0} if name == "satimp" else {}))
    opt = torch.optim.SGD(m.parameters(), lr=0.5)

    def answer_lp():
        with torch.no_grad():
            return float(obj(m, {"forget": fb}).token_logprobs.sum())

    before = answer_lp()
    for _ in range(3):
        opt.zero_grad()
        obj(m, {"forget": fb}).loss.backward()
        opt.step()
    assert answer_lp() < before - 1e-3


# --------------------------------------------------------------------------- hard sampling
@pytest.mark.parametrize("name", ["topk", "bottomk", "random"])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 1.0])
def test_hard_sampling_objectives(name, fraction, model, inputs):
    obj = objectives.get(name, fraction=fraction, seed=5)
    out = obj(model, inputs)
    fb = inputs["forget"]
    lp = slow_logprobs(model, fb)
    kept = {}
    for b, row in enumerate(lp):
        n = len(row)
        k = min(n, max(1, math.floor(fraction * n + 0.5)))
        row_w = out.token_weights[b]
        sel = [t for t, _ in row if float(row_w[t]) == 1.0]
        assert len(sel) == k and float(row_w.sum()) == k
        losses = {t: -float(l.detach()) for t, l in row}
        if name == "topk":  # every kept loss >= every dropped loss
            drop = [losses[t] for t in losses if t not in sel]
            assert not drop or min(losses[t] for t in sel) >= max(drop)
        if name == "bottomk":
            drop = [losses[t] for t in losses if t not in sel]
            assert not drop or max(losses[t] for t in sel) <= min(drop)
        kept.update({(b, t): 1.0 for t in sel})
    slow, _ = slow_weighted(lp, lambda b, t, p: kept.get((b, t), 0.0))
    assert close(out.loss, slow)
    check_grads(model, out.loss, slow)
    # the same seed gives the same random selection on a fresh objective
    again = objectives.get(name, fraction=fraction, seed=5)(model, inputs)
    assert torch.equal(again.token_weights, out.token_weights)


# --------------------------------------------------------------------------- idk / dpo / rmu
def test_idk_against_slow(model, inputs):
    out = objectives.get("idk")(model, inputs)
    slow = slow_retain_nll(model, inputs["idk"])  # flat mean NLL of the refusal answers
    assert close(out.loss, slow) and out.token_weights is None
    check_grads(model, out.loss, slow)
    with pytest.raises(ValueError, match="idk"):
        objectives.get("idk")(model, {"forget": inputs["forget"]})


def test_dpo_against_slow(model, ref_model, inputs):
    beta = 0.5
    out = objectives.get("dpo", beta=beta)(model, inputs, ref_model=ref_model)
    lw, ll = slow_logprobs(model, inputs["idk"]), slow_logprobs(model, inputs["forget"])
    rw, rl = slow_ref_dict(ref_model, inputs["idk"]), slow_ref_dict(ref_model, inputs["forget"])
    terms = []
    for b in range(3):
        m = (sum(l for _, l in lw[b]) - sum(rw[b].values())) - (sum(l for _, l in ll[b]) - sum(rl[b].values()))
        terms.append(-(2 / beta) * torch.nn.functional.logsigmoid(beta * m))
        assert close(out.instance_weights[b], 2 / (1 + math.exp(beta * float(m.detach()))))
    slow = sum(terms) / 3
    assert close(out.loss, slow)
    check_grads(model, out.loss, slow)


@pytest.mark.parametrize("layer", [0, 1])
def test_rmu_against_slow(layer, model, ref_model, inputs):
    obj = objectives.get("rmu", layer=layer, steer=3.0, seed=4, retain_weight=0.5)
    out = obj(model, inputs, ref_model=ref_model)
    g = torch.Generator().manual_seed(4)
    r = torch.rand(32, generator=g, dtype=torch.float64)
    target = 3.0 * r / r.norm()

    def hs(m, batch):
        return m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states[layer + 1]

    def slow_mse(h, other, batch):
        vals = []
        for b in range(h.shape[0]):
            for t in range(1, h.shape[1]):
                if int(batch["labels"][b, t]) != -100:
                    o = other if other.dim() == 1 else other[b, t]
                    vals.append(((h[b, t] - o) ** 2).sum() / h.shape[-1])
        return sum(vals) / len(vals)

    f = slow_mse(hs(model, inputs["forget"]), target, inputs["forget"])
    with torch.no_grad():
        href = hs(ref_model, inputs["retain"])
    r_ = slow_mse(hs(model, inputs["retain"]), href, inputs["retain"])
    assert close(out.forget_loss, f) and close(out.retain_loss, r_)
    assert close(out.loss, f + 0.5 * r_)
    check_grads(model, out.loss, f + 0.5 * r_)
    with pytest.raises(ValueError, match="layer=5 out of range"):
        objectives.get("rmu", layer=5)(model, inputs, ref_model=ref_model)
    assert not objectives.get("rmu", retain_loss="none").needs_reference


@pytest.mark.parametrize("granularity", ["instance", "batch", "group"])
def test_granularity_objectives(granularity, model, inputs):
    b1, b2 = 1.0, 0.5
    obj = objectives.get("satimp", beta1=b1, beta2=b2, granularity=granularity, group_size=2, retain_loss="none")
    out = obj(model, inputs)
    lp = slow_logprobs(model, inputs["forget"])
    f = lambda P: P**b1 * (1 - P) ** b2  # noqa: E731
    inst = [f(math.exp(sum(float(l.detach()) for _, l in row))) for row in lp]
    if granularity == "instance":
        weight_of = lambda b, t, p: inst[b]  # noqa: E731
    elif granularity == "batch":
        weight_of = lambda b, t, p: sum(inst) / len(inst)  # noqa: E731
    else:
        table = {}
        for b, row in enumerate(lp):
            toks = sorted(((-f(math.exp(float(l.detach()))), t) for t, l in row))
            for c in range(0, len(toks), 2):
                chunk = toks[c : c + 2]
                for _, t in chunk:
                    table[(b, t)] = -sum(v for v, _ in chunk) / len(chunk)
        weight_of = lambda b, t, p: table[(b, t)]  # noqa: E731
    slow, ws = slow_weighted(lp, weight_of)
    assert close(out.loss, slow)
    check_weights(out, ws, inputs["forget"])
    check_grads(model, out.loss, slow)


def test_default_hparams_listing():
    hp = objectives.default_hparams("satimp")
    assert hp["beta1"] == 5.0 and hp["retain_weight"] == 0.1 and "granularity" in hp
    assert set(objectives.default_hparams("ga")) == {"retain_loss", "retain_weight", "forget_weight", "kl_tokens"}
    with pytest.raises(ValueError, match="valid names"):
        objectives.default_hparams("nope")


def test_bf16_model_weights_in_float32(inputs):
    m = tiny_model(0).to(torch.bfloat16)
    out = objectives.get("satimp", retain_loss="none")(m, inputs)
    assert out.token_weights.dtype == torch.float32 and out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)
