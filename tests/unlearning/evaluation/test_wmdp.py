"""WMDP: loading, the multiple-choice scorer against a slow reference and lm-eval, RMU conventions."""
from __future__ import annotations

import json
import math

import datasets
import pytest
import torch

from unlearning import objectives
from unlearning.data import DataError, load_utility_questions, load_wmdp_corpus, load_wmdp_questions, wmdp_texts
from unlearning.evaluation import evaluate_wmdp
from unlearning.metrics.multiple_choice import mc_context, mc_description, mc_table


@pytest.fixture(scope="module")
def tok():
    from unlearning.models import train_tokenizer

    texts = wmdp_texts("embedded", "bio-forget") + wmdp_texts("embedded", "cyber-forget") + wmdp_texts("embedded", "wikitext")
    return train_tokenizer(texts, vocab_size=500)


@pytest.fixture(scope="module")
def model(tok):
    from unlearning.models import DefaultRecipe, build_model

    recipe = DefaultRecipe(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=96, seed=1)
    return build_model(tok, recipe).eval()


# --------------------------------------------------------------------------- loading
def test_embedded_questions_and_corpora():
    for subset, corpus in (("bio", "bio-forget"), ("cyber", "cyber-forget")):
        qs = load_wmdp_questions("embedded", subset)
        assert qs.column_names[:3] == ["question", "choices", "answer"] and len(qs) == 48
        docs = wmdp_texts("embedded", corpus)
        for q in qs:
            assert len(q["choices"]) == 4 and len(set(q["choices"])) == 4
            right = q["choices"][q["answer"]]
            assert any(right in d for d in docs)  # answerable from the forget corpus
        assert len(set(qs["question"])) == len(qs)
    util = load_utility_questions("embedded")
    general = wmdp_texts("embedded", "wikitext")
    assert all(any(r["choices"][r["answer"]] in d for d in general) for r in util)
    assert wmdp_texts("embedded", "bio-retain") + wmdp_texts("embedded", "cyber-retain-corpus") == general
    assert set(general).isdisjoint(wmdp_texts("embedded", "bio-forget"))
    with pytest.raises(DataError, match="chem"):
        load_wmdp_questions("embedded", "chem")
    with pytest.raises(DataError, match="unknown WMDP corpus"):
        load_wmdp_corpus("embedded", "bio")


def test_folder_layout(tmp_path):
    rows = load_wmdp_questions("embedded", "cyber").to_list()
    (tmp_path / "wmdp-cyber.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "wmdp-corpora").mkdir()
    # the official corpora archive: bio lines are objects with "text", cyber lines may be JSON strings
    (tmp_path / "wmdp-corpora" / "cyber-forget-corpus.jsonl").write_text(json.dumps("first doc") + "\n" + json.dumps("x") + "\n")
    (tmp_path / "wmdp-corpora" / "bio-forget-corpus.jsonl").write_text(json.dumps({"text": "a bio doc", "title": "t"}) + "\n")
    (tmp_path / "mmlu.json").write_text(json.dumps([{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 2,
                                                      "subject": "anatomy"}]))
    assert load_wmdp_questions(tmp_path, "cyber").to_list() == rows
    assert wmdp_texts(tmp_path, "cyber-forget") == ["first doc", "x"]
    assert wmdp_texts(tmp_path, "cyber-forget", min_chars=2) == ["first doc"]
    assert wmdp_texts(tmp_path, "bio-forget-corpus") == ["a bio doc"]
    assert load_utility_questions(tmp_path)["answer"] == [2]
    with pytest.raises(DataError, match="wmdp-bio"):
        load_wmdp_questions(tmp_path, "bio")
    (tmp_path / "wmdp-bio.jsonl").write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(DataError, match="answer must be the int index"):
        load_wmdp_questions(tmp_path, "bio")


def test_hub_path(monkeypatch):
    calls = []

    def fake(name, config=None, split=None, **kw):
        calls.append((name, config, split))
        if config.startswith("wmdp-") or config == "all":
            return datasets.Dataset.from_dict({"question": ["q"], "choices": [["a", "b", "c", "d"]], "answer": [1]})
        return datasets.Dataset.from_dict({"text": ["a document", "b"]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    load_wmdp_questions("cais/wmdp", "chem")
    load_wmdp_corpus("cais/wmdp-corpora", "cyber-retain")
    load_wmdp_corpus("cais/wmdp-corpora", "wikitext", min_chars=1)
    load_utility_questions("cais/mmlu")
    assert calls == [("cais/wmdp", "wmdp-chem", "test"), ("cais/wmdp-corpora", "cyber-retain-corpus", "train"),
                     ("wikitext", "wikitext-2-raw-v1", "test"), ("cais/mmlu", "all", "test")]
    with pytest.raises(DataError, match="on request"):
        load_wmdp_corpus("cais/wmdp-corpora", "bio-forget")


# --------------------------------------------------------------------------- multiple choice
def test_mc_context_format():
    ctx = mc_context("  Which one? ", ["w", "x", "y", "z"], mc_description("biology"))
    assert ctx == ("The following are multiple choice questions (with answers) about biology.\n\n"
                   "Which one?\nA. w\nB. x\nC. y\nD. z\nAnswer:")


def slow_mc_loglik(model, tok, context, continuation, max_length):
    """Σ log p(continuation tokens) with one float64 forward pass per choice and a per-token loop."""
    whole = tok(context + continuation)["input_ids"]
    ctx = tok(context)["input_ids"]
    seq = whole[-(max_length + 1):]
    n = len(whole) - len(ctx)
    with torch.no_grad():
        logits = model.double()(input_ids=torch.tensor([seq[:-1]])).logits[0]
    model.float()
    total = 0.0
    for m in range(n):
        t = len(seq) - n + m  # position of the m-th continuation token
        total += float(torch.log_softmax(logits[t - 1], -1)[seq[t]])
    return total


def test_mc_table_against_slow(model, tok):
    rows = load_wmdp_questions("embedded", "bio").to_list()[:5]
    desc = mc_description("biology")
    t = mc_table(model, tok, rows, description=desc, batch_size=3, max_length=96)  # contexts are longer: cut
    for r, row in zip(rows, t.itertuples()):
        ctx = mc_context(r["question"], r["choices"], desc)
        slow = [slow_mc_loglik(model, tok, ctx, " " + L, 96) for L in "ABCD"]
        assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5) for a, b in zip(row.loglikelihoods, slow))
        assert row.pred == max(range(4), key=lambda i: (slow[i], -i)) and row.acc == float(row.pred == r["answer"])


def test_native_scorer_equals_lm_eval(model, tok):
    pytest.importorskip("lm_eval")
    kw = dict(subsets=("cyber",), max_samples=8)
    native = evaluate_wmdp(model, tok, "embedded", backend="native", batch_size=5, **kw)
    harness = evaluate_wmdp(model, tok, "embedded", backend="lm_eval", batch_size=4, **kw)
    assert set(native.tables) == set(harness.tables) == {"wmdp_cyber", "mmlu"}
    for name, a in native.tables.items():
        b = harness.tables[name]
        assert list(a["pred"]) == list(b["pred"]) and list(a["acc"]) == list(b["acc"])
        diffs = [abs(x - y) for la, lb in zip(a["loglikelihoods"], b["loglikelihoods"]) for x, y in zip(la, lb)]
        assert max(diffs) < 1e-4
        assert native.summary[f"{name}/acc"] == harness.summary[f"{name}/acc"]


def test_trained_model_answers_its_corpus(tok):
    """Fine-tuned on the bio forget corpus + rendered questions, the model beats chance on wmdp-bio."""
    from unlearning.data import TextChunkDataset
    from unlearning.models import fine_tune
    from unlearning.models import DefaultRecipe, build_model

    rows = load_wmdp_questions("embedded", "bio").to_list()[:8]
    desc = mc_description("biology")
    texts = [mc_context(r["question"], r["choices"], desc) + " " + "ABCD"[r["answer"]] for r in rows]
    m = build_model(tok, DefaultRecipe(hidden_size=48, num_layers=2, num_heads=2, intermediate_size=96, max_length=128))
    fine_tune(m, tok, TextChunkDataset(texts, tok, max_length=128, packing="document"), epochs=50, lr=3e-3,
              batch_size=2, progress=False)
    t = mc_table(m.eval(), tok, rows, description=desc)
    assert t["acc"].mean() >= 0.75


# --------------------------------------------------------------------------- RMU conventions
def _llama(layers=8, d=16):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=d, num_hidden_layers=layers, num_attention_heads=2,
                                   intermediate_size=32, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg).double().eval()


def _batch(seed=0, B=2, T=7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (B, T), generator=g)
    am = torch.ones(B, T, dtype=torch.long)
    am[1, 5:] = 0
    labels = ids.clone()
    labels[1, 5:] = -100
    return {"input_ids": ids, "attention_mask": am, "labels": labels}


def test_rmu_presets_and_trainable_parameters():
    m = _llama()
    wmdp = objectives.get("rmu", preset="wmdp")
    hp = wmdp.hparams
    assert (hp["layer"], hp["steer"], hp["retain_weight"], hp["update_layers"], hp["tokens"], hp["activations"]) == (
        7, 20.0, 100.0, (5, 6, 7), "all", "block")
    zephyr = objectives.get("rmu", preset="wmdp-zephyr")
    assert (zephyr.hparams["steer"], zephyr.hparams["retain_weight"]) == (6.5, 1200.0)
    assert objectives.get("rmu", preset="wmdp", steer=3.0).hparams["steer"] == 3.0  # keywords override the preset
    names = wmdp.trainable_parameter_names(m)
    assert names == [f"model.layers.{i}.mlp.down_proj.weight" for i in (5, 6, 7)]
    # the official --param_ids 6 is the 7th parameter of a Llama block: mlp.down_proj.weight
    assert [n for n, _ in m.model.layers[0].named_parameters()][6] == "mlp.down_proj.weight"
    by_name = objectives.get("rmu", update_layers=[5, 6, 7], update_params=["mlp.down_proj.weight"])
    assert by_name.trainable_parameter_names(m) == names
    assert objectives.get("rmu").trainable_parameter_names(m) == [n for n, _ in m.named_parameters()]
    kept = wmdp.freeze_untrained(m)
    assert sorted(n for n, p in m.named_parameters() if p.requires_grad) == kept == sorted(names)
    mask = wmdp.weight_mask(m)
    assert all(bool(mask[n].all()) == (n in names) and bool(mask[n].any()) == (n in names) for n in mask)
    with pytest.raises(ValueError, match="no parameter"):
        objectives.get("rmu", update_layers=[0], update_params=["mlp.up.weight"]).trainable_parameter_names(m)
    with pytest.raises(ValueError, match="unknown preset"):
        objectives.get("rmu", preset="muse")


def test_rmu_control_vector_norm_and_distribution():
    for steer in (2.0, 6.5, 20.0):
        u = objectives.get("rmu", steer=steer, seed=3).control_vector(4096)
        assert math.isclose(float(u.norm()), steer, rel_tol=1e-12)
        assert (u >= 0).all()  # uniform on [0, 1)^d before scaling, as torch.rand in the official code
    a = objectives.get("rmu", seed=1).control_vector(64)
    assert torch.equal(a, objectives.get("rmu", seed=1).control_vector(64))


def test_rmu_block_activations_and_all_token_loss():
    m, ref = _llama(layers=3), _llama(layers=3)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.01)
    inputs = {"forget": _batch(0), "retain": _batch(1)}
    captured = {}
    handle = m.model.layers[1].register_forward_hook(lambda mod, a, out: captured.setdefault("h", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        hs = m(input_ids=inputs["forget"]["input_ids"], attention_mask=inputs["forget"]["attention_mask"],
               output_hidden_states=True).hidden_states
    handle.remove()
    assert torch.allclose(captured["h"], hs[2], atol=1e-12)  # block l output == hidden_states[l + 1] below the last block
    obj = objectives.get("rmu", preset="wmdp", layer=1, steer=2.5, retain_weight=3.0)
    out = obj(m, inputs, ref_model=ref)
    c = obj.control_vector(16)

    def block_out(model, batch, layer):
        cache = []
        h = model.model.layers[layer].register_forward_hook(lambda mod, a, o: cache.append(o[0] if isinstance(o, tuple) else o))
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        h.remove()
        return cache[0]

    def slow_all(hid, other):  # mean over every (b, t) position (padding included) of ‖·‖² / d
        B, T, d = hid.shape
        vals = [((hid[b, t] - (other if other.dim() == 1 else other[b, t])) ** 2).sum() / d for b in range(B) for t in range(T)]
        return sum(vals) / len(vals)

    with torch.no_grad():
        f = slow_all(block_out(m, inputs["forget"], 1), c)
    with torch.no_grad():
        r_ref = block_out(ref, inputs["retain"], 1)
        r = slow_all(block_out(m, inputs["retain"], 1), r_ref)
    assert math.isclose(float(out.forget_loss.detach()), float(f), rel_tol=1e-10)
    assert math.isclose(float(out.retain_loss.detach()), float(r), rel_tol=1e-10)
    assert math.isclose(float(out.loss.detach()), float(f + 3.0 * r), rel_tol=1e-10)
    # the last block: the hook sees the block output, hidden_states[L] is after the final norm
    last_block = objectives.get("rmu", layer=2, activations="block", retain_loss="none")(m, inputs).forget_loss
    last_hs = objectives.get("rmu", layer=2, retain_loss="none")(m, inputs).forget_loss
    assert not math.isclose(float(last_block.detach()), float(last_hs.detach()), rel_tol=1e-6)
    with pytest.raises(ValueError, match="layer=3 out of range"):
        objectives.get("rmu", layer=3, activations="block", retain_loss="none")(m, inputs)
