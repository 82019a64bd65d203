"""unlearning.objectives.weighting vs slow per-element formulas (float64), hard-sampling counts, granularity."""
from __future__ import annotations

import functools
import math

import pytest
import torch

from unlearning.objectives import weighting as W

TOL = 1e-12


def rand_logp(seed=0, B=4, T=12, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4  # p in (e^-4, 1]
    mask = torch.zeros(B, T, dtype=torch.bool)
    for b, (s, e) in enumerate([(2, 12), (3, 9), (1, 2), (5, 11)][:B]):
        mask[b, s:e] = True
    return (logp * mask).to(dtype), mask


def slow_map(logp, mask, f):
    out = torch.zeros(logp.shape, dtype=torch.float64)
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if mask[b, t]:
                out[b, t] = f(math.exp(float(logp[b, t])), b, t)
    return out


def assert_close(a, b, tol=TOL):
    err = float((a.to(torch.float64) - b.to(torch.float64)).abs().max())
    assert err <= tol, err


CASES = [
    ("saturation", lambda lp, m: W.saturation(lp, m, 2.0), lambda p, b, t: p**2.0),
    ("importance", lambda lp, m: W.importance(lp, m, 0.5), lambda p, b, t: (1 - p) ** 0.5),
    ("satimp", lambda lp, m: W.satimp(lp, m), lambda p, b, t: p**5 * (1 - p) ** 0.1),
    ("satimp2", lambda lp, m: W.satimp(lp, m, 1.0, 3.0), lambda p, b, t: p * (1 - p) ** 3),
    ("wga", lambda lp, m: W.wga(lp, m, 5.0), lambda p, b, t: p**5),
]


@pytest.mark.parametrize("name,fast,slow", CASES, ids=[c[0] for c in CASES])
def test_likelihood_weights(name, fast, slow):
    logp, mask = rand_logp()
    lp = logp.clone().requires_grad_(True)
    w = fast(lp, mask)
    assert w.dtype == torch.float64 and not w.requires_grad
    assert_close(w, slow_map(logp, mask, slow))
    assert bool((w[~mask] == 0).all())
    # float32 and bf16 inputs are computed in float32
    assert fast(logp.float(), mask).dtype == torch.float32
    assert fast(logp.bfloat16(), mask).dtype == torch.float32


def test_tnpo_wtnpo():
    logp, mask = rand_logp(1)
    ref, _ = rand_logp(2)
    beta, alpha = 3.0, 1.5

    def tn(p, b, t):
        pr = math.exp(float(ref[b, t]))
        return 2 * p**beta / (p**beta + pr**beta + 1e-5)

    assert_close(W.tnpo(logp, ref, mask, beta), slow_map(logp, mask, tn))
    assert_close(W.wtnpo(logp, ref, mask, beta, alpha), slow_map(logp, mask, lambda p, b, t: tn(p, b, t) * p**alpha))


def test_importance_no_cancellation_at_small_p():
    logp = torch.tensor([[0.0, -1e-12, -50.0]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True]])
    w = W.importance(logp, mask, 1.0)
    assert abs(float(w[0, 1]) - 1e-12) < 1e-20 and abs(float(w[0, 2]) - 1.0) < 1e-15


def test_bad_hparams():
    logp, mask = rand_logp()
    with pytest.raises(ValueError, match="beta"):
        W.saturation(logp, mask, -1.0)
    with pytest.raises(ValueError, match="same shape"):
        W.satimp(logp, mask[:, :3])
    with pytest.raises(ValueError, match="fraction"):
        W.hard_sampling(-logp, mask, 0.0)
    with pytest.raises(ValueError, match="topk, bottomk, random"):
        W.hard_sampling(-logp, mask, 0.5, "middle")
    with pytest.raises(ValueError, match="token, instance, group, batch"):
        W.apply_granularity(W.saturation, logp, mask, "word")


# --------------------------------------------------------------------------- hard sampling
@pytest.mark.parametrize("mode", W.HARD_SAMPLING_MODES)
def test_hard_sampling_exact_counts(mode):
    g = torch.Generator().manual_seed(0)
    ordered_checks = 0
    for trial in range(30):
        B, T = 5, 17
        nll = torch.rand(B, T, generator=g, dtype=torch.float64)
        mask = torch.rand(B, T, generator=g) < 0.6
        mask[0] = False  # a sequence without answer tokens keeps nothing
        mask[1, :] = False
        mask[1, 4] = True  # a single token is always kept
        frac = float(torch.rand(1, generator=g)) * 0.98 + 0.02
        w = W.hard_sampling(nll, mask, frac, mode, torch.Generator().manual_seed(trial))
        for b in range(B):
            n = int(mask[b].sum())
            k = 0 if n == 0 else min(n, max(1, math.floor(frac * n + 0.5)))
            assert int(w[b].sum()) == k and bool((w[b][~mask[b]] == 0).all())
            if mode != "random" and 0 < k < n:
                ordered_checks += 1
                kept, dropped = nll[b][w[b] == 1], nll[b][(w[b] == 0) & mask[b]]
                if mode == "topk":
                    assert float(kept.min()) >= float(dropped.max())
                else:
                    assert float(kept.max()) <= float(dropped.min())
    assert ordered_checks > 0 or mode == "random"  # the ordering check above really ran


def test_hard_sampling_symmetric_and_ties():
    nll = torch.tensor([[0.0, 5.0, 1.0, 4.0, 2.0, 3.0]])
    mask = torch.tensor([[False, True, True, True, True, True]])
    top = W.hard_sampling(nll, mask, 0.4, "topk")
    bot = W.hard_sampling(nll, mask, 0.4, "bottomk")
    assert top.tolist() == [[0, 1, 0, 1, 0, 0]] and bot.tolist() == [[0, 0, 1, 0, 1, 0]]
    tied = torch.ones(1, 6)
    assert W.hard_sampling(tied, mask, 0.4, "topk").tolist() == [[0, 1, 1, 0, 0, 0]]
    assert W.hard_sampling(tied, mask, 0.4, "bottomk").tolist() == [[0, 1, 1, 0, 0, 0]]


def test_hard_sampling_random_seeded():
    nll, mask = rand_logp(3)
    a = W.hard_sampling(nll, mask, 0.5, "random", torch.Generator().manual_seed(7))
    b = W.hard_sampling(nll, mask, 0.5, "random", torch.Generator().manual_seed(7))
    c = W.hard_sampling(nll, mask, 0.5, "random", torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- granularity
SAT = functools.partial(W.saturation, beta=1.0)
SATIMP = functools.partial(W.satimp, beta1=2.0, beta2=0.5)


@pytest.mark.parametrize("fn,f", [(SAT, lambda P: P), (SATIMP, lambda P: P**2 * (1 - P) ** 0.5)])
def test_granularity_instance_batch(fn, f):
    logp, mask = rand_logp(4)
    logp = logp / 3
    inst = W.apply_granularity(fn, logp, mask, "instance")
    batch = W.apply_granularity(fn, logp, mask, "batch")
    assert_close(W.apply_granularity(fn, logp, mask, "token"), fn(logp, mask))
    ws = []
    for b in range(logp.shape[0]):
        P = math.exp(sum(float(logp[b, t]) for t in range(logp.shape[1]) if mask[b, t]))
        ws.append(f(P))
        for t in range(logp.shape[1]):
            assert abs(float(inst[b, t]) - (ws[-1] if mask[b, t] else 0.0)) < TOL
    mean = sum(ws) / len(ws)
    assert_close(batch, mask.double() * mean)


@pytest.mark.parametrize("G", [1, 2, 3, 20])
def test_granularity_group(G):
    logp, mask = rand_logp(5)
    tok = SAT(logp, mask)
    grp = W.apply_granularity(SAT, logp, mask, "group", group_size=G)
    for b in range(logp.shape[0]):
        pos = [t for t in range(logp.shape[1]) if mask[b, t]]
        order = sorted(pos, key=lambda t: (-float(tok[b, t]), t))
        for c in range(0, len(order), G):
            chunk = order[c : c + G]
            m = sum(float(tok[b, t]) for t in chunk) / len(chunk)
            for t in chunk:
                assert abs(float(grp[b, t]) - m) < TOL
    assert bool((grp[~mask] == 0).all())
    assert_close(grp.sum(1), tok.sum(1))  # chunk means preserve each sequence's total


# --------------------------------------------------------------------------- annotated importance
class FakeTok:
    vocab = {5: " Paris", 6: " is", 7: " the", 8: " capital", 9: " France", 10: ".", 11: " Fr", 12: "ance"}

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


def test_annotated_importance():
    labels = torch.tensor([[-100, 5, 6, 7, 8, 9, 10], [-100, -100, 11, 12, 6, -100, -100]])
    kws = [["Paris", "the capital"], ["France"]]
    w = W.annotated_importance(labels, kws, FakeTok(), allocation=0.25, temperature=0.5)
    other = 0.25**2
    # " is" occurs inside "Paris" but not at a keyword occurrence: not key
    assert w[0].tolist() == pytest.approx([0, 1, other, 1, 1, other, other])
    # a keyword split over sub-word tokens marks every piece
    assert w[1].tolist() == pytest.approx([0, 0, 1, 1, other, 0, 0])
    with pytest.raises(ValueError, match="one keyword list per instance"):
        W.annotated_importance(labels, kws[:1], FakeTok())


# --------------------------------------------------------------------------- attribution importance
def test_attribution_importance_direct_captum_and_slow():
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).double().eval()
    ids = torch.randint(1, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    am = torch.ones_like(ids)
    am[1, 6:] = 0
    labels = ids.clone()
    labels[:, :3] = -100
    labels[1, 6:] = -100
    batch = {"input_ids": ids, "attention_mask": am, "labels": labels, "index": torch.arange(2)}
    for reduce in ("norm", "sum"):
        d = W.attribution_importance(model, batch, reduce=reduce)
        c = W.attribution_importance(model, batch, reduce=reduce, method="captum")
        assert_close(d, c, 1e-10)
        assert not d.requires_grad and all(p.grad is None for p in model.parameters())
        # slow: one instance at a time, gradient of its own answer log-likelihood
        for b in range(2):
            emb = model.get_input_embeddings()(ids[b : b + 1]).detach().requires_grad_(True)
            logits = model(inputs_embeds=emb, attention_mask=am[b : b + 1]).logits[0]
            lp = sum(torch.log_softmax(logits[t - 1], -1)[labels[b, t]] for t in range(1, 8) if labels[b, t] != -100)
            (g,) = torch.autograd.grad(lp, emb)
            prod = (g * emb)[0].detach()
            s = [float(prod[t].norm()) if reduce == "norm" else abs(float(prod[t].sum())) for t in range(8)]
            s = [v if labels[b, t] != -100 else 0.0 for t, v in enumerate(s)]
            top = max(s)
            for t in range(8):
                assert abs(float(d[b, t]) - s[t] / top) < 1e-10
        assert bool((d[labels == -100] == 0).all()) and float(d.max()) == pytest.approx(1.0)
