"""MUSE: loading (embedded, folder, hub), VerbMem / KnowMem / PrivLeak against slow references."""
from __future__ import annotations

import json
import math
import re

import datasets
import numpy as np
import pytest
import torch

from unlearning.data import DataError, EmbeddedNewsConfig, load_muse, muse_texts
from unlearning.data.embedded.news import NEWS_SPLITS
from unlearning.evaluation import MUSE_RETRAIN_AUC, KNOWMEM_STOP_STRINGS, evaluate_muse, knowmem_prompt, privleak_reference
from unlearning.metrics.generation import greedy_continuations, rouge_scores
from unlearning.metrics.mia import text_mia_scores


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tok():
    from unlearning.models import train_tokenizer

    texts = [muse_texts("embedded", s) for s in ("forget", "retain1", "retain2", "holdout")]
    return train_tokenizer([t for ts in texts for t in ts], vocab_size=500)


@pytest.fixture(scope="module")
def model(tok):
    from unlearning.models import DefaultRecipe, build_model

    recipe = DefaultRecipe(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=256, seed=0)
    return build_model(tok, recipe).eval()


def write_muse_folder(root, *, jsonl=False, retain2_names=False):
    """A folder in muse_bench's load_data.py layout: <subset>/<split>.json holding JSON arrays."""
    cfg = EmbeddedNewsConfig(num_forget=3, num_retain=3, num_holdout=3, num_icl=2)
    for subset, splits in NEWS_SPLITS.items():
        (root / subset).mkdir(parents=True, exist_ok=True)
        for split in splits:
            rows = load_muse("embedded", subset, split, embedded=cfg).to_list()
            values = [r["text"] for r in rows] if subset in ("raw", "privleak") else rows  # strings, as muse_bench writes
            name = split
            if retain2_names and (subset, split) in (("knowmem", "retain_qa"), ("privleak", "retain")):
                name = split.replace("retain", "retain2")
            path = root / subset / (f"{name}.jsonl" if jsonl else f"{name}.json")
            if jsonl:
                path.write_text("".join(json.dumps(v) + "\n" for v in values))
            else:
                path.write_text(json.dumps(values))
    return cfg


# --------------------------------------------------------------------------- loading
def test_embedded_layout():
    cfg = EmbeddedNewsConfig()
    sizes = {s: len(load_muse("embedded", "raw", s)) for s in NEWS_SPLITS["raw"]}
    assert sizes == {"forget": 24, "retain1": 24, "retain2": 24, "holdout": 24}
    forget = muse_texts("embedded", "forget")
    vm = load_muse("embedded", "verbmem", "forget")
    assert vm.column_names == ["prompt", "gt"] and len(vm) == 24
    assert all(f == f"{p} {g}" for f, p, g in zip(forget, vm["prompt"], vm["gt"]))  # prompt + continuation = document
    assert len(load_muse("embedded", "knowmem", "forget_qa")) == 24 * cfg.knowmem_per_document
    assert len(load_muse("embedded", "knowmem", "retain_qa_icl")) == cfg.num_icl
    assert muse_texts("embedded", "forget", subset="privleak") == forget
    assert muse_texts("embedded", "retain", subset="privleak") == muse_texts("embedded", "retain2")
    # hub-style aliases
    assert load_muse("embedded", "knowmem", "retain2_qa").to_list() == load_muse("embedded", "knowmem", "retain_qa").to_list()
    # the corpora are disjoint and questions are unique
    all_docs = [t for s in NEWS_SPLITS["raw"] for t in muse_texts("embedded", s)]
    assert len(set(all_docs)) == len(all_docs)
    qs = list(load_muse("embedded", "knowmem", "forget_qa")["question"]) + list(load_muse("embedded", "knowmem", "retain_qa")["question"])
    assert len(set(qs)) == len(qs)
    # answers of the forget questions are in the forget documents, not in the retain ones
    for row in load_muse("embedded", "knowmem", "forget_qa"):
        assert any(row["answer"] in d for d in forget)


@pytest.mark.parametrize("jsonl", [False, True])
def test_folder_matches_embedded(tmp_path, jsonl):
    cfg = write_muse_folder(tmp_path, jsonl=jsonl)
    for subset, splits in NEWS_SPLITS.items():
        for split in splits:
            assert load_muse(tmp_path, subset, split).to_list() == load_muse("embedded", subset, split, embedded=cfg).to_list()


def test_folder_aliases_and_errors(tmp_path):
    write_muse_folder(tmp_path, retain2_names=True)
    assert len(load_muse(tmp_path, "knowmem", "retain_qa")) == 6  # found as retain2_qa.json
    assert len(load_muse(tmp_path, "privleak", "retain")) == 3
    with pytest.raises(DataError, match="no file"):
        load_muse(tmp_path, "scal", "forget_1")
    with pytest.raises(DataError, match="no split"):
        load_muse(tmp_path, "raw", "forget9")
    with pytest.raises(DataError, match="unknown MUSE subset"):
        load_muse(tmp_path, "rawtext", "forget")
    (tmp_path / "raw" / "forget.json").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_muse(tmp_path, "raw", "forget")
    (tmp_path / "knowmem" / "forget_qa.json").write_text(json.dumps([{"q": "x", "a": "y"}]))
    with pytest.raises(DataError, match="lacks the columns"):
        load_muse(tmp_path, "knowmem", "forget_qa")
    with pytest.raises(DataError, match="does not exist"):
        load_muse(tmp_path / "missing", "raw", "forget")


def test_hub_path(monkeypatch):
    calls = []

    def fake_load_dataset(name, config=None, split=None, **kw):
        calls.append((name, config, split))
        if split == "retain_qa":  # an older revision: only retain2_qa exists
            raise ValueError(f"Unknown split {split!r}")
        cols = {"raw": {"text": ["a b c"]}, "knowmem": {"question": ["q?"], "answer": ["a"]}}[config]
        return datasets.Dataset.from_dict(cols)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_muse("muse-bench/MUSE-News", "raw", "retain1")["text"] == ["a b c"]
    assert load_muse("muse-bench/MUSE-Books", "knowmem", "retain_qa")["answer"] == ["a"]
    assert calls == [("muse-bench/MUSE-News", "raw", "retain1"), ("muse-bench/MUSE-Books", "knowmem", "retain_qa"),
                     ("muse-bench/MUSE-Books", "knowmem", "retain2_qa")]

    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="network"):
        load_muse("muse-bench/MUSE-News", "raw", "forget")


# --------------------------------------------------------------------------- ROUGE
def _rouge_tokens(text):  # rouge_score's default tokenizer without stemming
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _lcs(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            dp[i + 1][j + 1] = dp[i][j] + 1 if a[i] == b[j] else max(dp[i][j + 1], dp[i + 1][j])
    return dp[-1][-1]


def slow_rouge_l(pred, ref):
    p, r = _rouge_tokens(pred), _rouge_tokens(ref)
    if not p or not r:
        return 0.0, 0.0
    lcs = _lcs(p, r)
    prec, rec = lcs / len(p), lcs / len(r)
    return (0.0 if lcs == 0 else 2 * prec * rec / (prec + rec)), rec


def test_rouge_scores_against_hand_lcs():
    preds = ["The bridge cost 270 million crowns.", "", "crowns million 270", "Nolny Bratefen led the team", "x"]
    refs = ["It cost 270 million crowns", "something", "270 million crowns", "Nolny Bratefen", "y z"]
    t = rouge_scores(preds, refs)
    for i, (p, r) in enumerate(zip(preds, refs)):
        f1, rec = slow_rouge_l(p, r)
        assert math.isclose(t.loc[i, "rougeL_f1"], f1, abs_tol=1e-12) and math.isclose(t.loc[i, "rougeL_recall"], rec, abs_tol=1e-12)


# --------------------------------------------------------------------------- generation metrics vs muse_bench loops
def muse_bench_generate(model, tok, prompt, max_new_tokens):
    """muse_bench's loop: one prompt at a time, BOS added, greedy, decode the new tokens."""
    ids = tok(prompt, return_tensors="pt", add_special_tokens=True).input_ids
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, attention_mask=torch.ones_like(ids))
    return tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)[0]


def test_greedy_continuations_batched_equals_single(model, tok):
    prompts = list(load_muse("embedded", "verbmem", "forget")["prompt"])[:6]
    batched = greedy_continuations(model, tok, prompts, max_new_tokens=12, batch_size=4)
    single = [muse_bench_generate(model, tok, p, 12) for p in prompts]
    assert batched == single
    stop = greedy_continuations(model, tok, prompts, max_new_tokens=12, batch_size=3, stop_strings=(" the", "e"))
    assert stop == [s.split(" the")[0].split("e")[0] for s in single]


def test_evaluate_muse_against_muse_bench_loops(model, tok):
    """VerbMem and KnowMem rows and means equal a literal re-implementation of muse_bench's eval loops."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    res = evaluate_muse(model, tok, "embedded", metrics=("verbmem_f", "knowmem_f", "knowmem_r"), max_samples=5,
                        verbmem_max_new_tokens=10, knowmem_max_new_tokens=6, batch_size=2)
    vm = load_muse("embedded", "verbmem", "forget").select(range(5))
    f1s = []
    for row, prompt, gt in zip(res.tables["verbmem_forget"].itertuples(), vm["prompt"], vm["gt"]):
        gt_short = tok.batch_decode(tok(gt, return_tensors="pt", add_special_tokens=True).input_ids[:, :10],
                                    skip_special_tokens=True)[0]
        out = muse_bench_generate(model, tok, prompt, 10)
        assert row.gt == gt_short and row.generation == out
        f1s.append(scorer.score(gt_short, out)["rougeL"].fmeasure)
    assert math.isclose(res.summary["verbmem_f"], sum(f1s) / len(f1s), abs_tol=1e-12)
    for which in ("forget", "retain"):
        qa = load_muse("embedded", "knowmem", f"{which}_qa").select(range(5))
        icl = load_muse("embedded", "knowmem", f"{which}_qa_icl")
        head = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in zip(icl["question"], icl["answer"]))
        f1s = []
        for row, q, a in zip(res.tables[f"knowmem_{which}"].itertuples(), qa["question"], qa["answer"]):
            prompt = head + f"Question: {q}\nAnswer: "
            out = muse_bench_generate(model, tok, prompt, 6)
            for w in KNOWMEM_STOP_STRINGS:
                out = out.split(w)[0]
            assert row.prompt == prompt and row.generation == out
            f1s.append(scorer.score(a, out)["rougeL"].fmeasure)
        key = "knowmem_f" if which == "forget" else "knowmem_r"
        assert math.isclose(res.summary[key], sum(f1s) / len(f1s), abs_tol=1e-12)
    assert knowmem_prompt("q", [("a", "b")], trailing_space=False) == "Question: a\nAnswer: b\n\nQuestion: q\nAnswer:"


# --------------------------------------------------------------------------- PrivLeak
def slow_min_k(model, tok, text, k=0.4):
    """MUSE's Min-K%: −mean of the lowest int(k·n) token log-probs of the whole text (BOS first), float64."""
    ids = tok(text, add_special_tokens=True)["input_ids"]
    with torch.no_grad():
        logits = model.double()(input_ids=torch.tensor([ids])).logits[0]
    model.float()
    lps = [float(torch.log_softmax(logits[t - 1], -1)[ids[t]]) for t in range(1, len(ids))]
    lowest = sorted(lps)[: int(len(lps) * k)]
    return -sum(lowest) / len(lowest)


def pair_auc(neg, pos):
    """P(pos > neg) + ½ P(tie), by counting every pair."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_privleak_against_hand_min_k(model, tok):
    res = evaluate_muse(model, tok, "embedded", metrics=("privleak",), max_samples=6, batch_size=4,
                        retain_reference=0.6)
    forget = muse_texts("embedded", "forget", subset="privleak")[:6]
    holdout = muse_texts("embedded", "holdout", subset="privleak")[:6]
    sf = [slow_min_k(model, tok, t) for t in forget]
    sh = [slow_min_k(model, tok, t) for t in holdout]
    assert np.allclose(res.tables["privleak_forget"]["mia_min_k"], sf, rtol=1e-5, atol=1e-6)
    assert np.allclose(res.tables["privleak_holdout"]["mia_min_k"], sh, rtol=1e-5, atol=1e-6)
    auc = pair_auc(sf, sh)  # ours: P(holdout score > forget score)
    assert math.isclose(res.summary["privleak/auc"], auc, abs_tol=1e-12)
    # MUSE: roc_auc with forget (non-member side of the key) labelled 0, holdout 1, score = −Min-K
    auc_muse = pair_auc([-s for s in sf], [-s for s in sh])
    assert math.isclose(res.summary["privleak/auc_muse"], auc_muse, abs_tol=1e-12)
    ref_muse = 1 - 0.6
    assert math.isclose(res.summary["privleak"], (auc_muse - ref_muse) / ref_muse * 100, abs_tol=1e-9)
    assert res.summary["privleak/reference"] == "given"


def test_privleak_reference_forms(model, tok):
    assert privleak_reference(None) == (0.5, "default 0.5")
    assert privleak_reference({"mia/min_k_auc": 0.7}) == (0.7, "retain model")
    assert MUSE_RETRAIN_AUC["news"] == pytest.approx(1 - 0.4772)
    with pytest.raises(ValueError, match="mia/loss_auc"):
        privleak_reference({"mia/min_k_auc": 0.7}, "loss")
    ref = evaluate_muse(model, tok, metrics=("privleak",), max_samples=4)
    res = evaluate_muse(model, tok, metrics=("privleak",), max_samples=4, retain_reference=model)
    assert res.summary["privleak/auc_retain"] == ref.summary["mia/min_k_auc"] and res.summary["privleak"] == 0.0
    with pytest.raises(ValueError, match="unknown MUSE metrics"):
        evaluate_muse(model, tok, metrics=("verbmem",))


def test_text_mia_scores_batching_and_truncation(model, tok):
    texts = muse_texts("embedded", "holdout")[:5]
    one = text_mia_scores(model, tok, texts, batch_size=1, max_length=40)
    many = text_mia_scores(model, tok, texts, batch_size=5, max_length=40)
    assert (one["num_tokens"] == 40).all()
    for col in ("mia_loss", "mia_min_k", "mia_zlib", "mia_min_k_plus_plus"):
        assert np.allclose(one[col], many[col], rtol=1e-5)


@pytest.mark.slow
def test_memorised_model_scores_high(tok):
    """A tiny model trained on four forget documents reproduces them (VerbMem near 1) and leaks membership."""
    from unlearning.data import TextChunkDataset
    from unlearning.models import fine_tune
    from unlearning.models import DefaultRecipe, build_model

    cfg = EmbeddedNewsConfig(num_forget=4, num_retain=4, num_holdout=4, num_icl=1)
    m = build_model(tok, DefaultRecipe(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                                       max_length=256, seed=0))
    data = TextChunkDataset(muse_texts("embedded", "forget", embedded=cfg), tok, max_length=256, packing="document")
    fine_tune(m, tok, data, epochs=120, lr=3e-3, batch_size=4, progress=False)
    res = evaluate_muse(m.eval(), tok, embedded=cfg, metrics=("verbmem_f", "privleak"), verbmem_max_new_tokens=64)
    assert res.summary["verbmem_f"] > 0.9
    assert res.summary["mia/min_k_auc"] == 1.0 and res.summary["privleak"] == pytest.approx(-100.0)


def test_verbmem_length_matching(model, tok):
    """Short references: the continuation has as many tokens as the reference (MUSE's fixed 128 otherwise)."""
    vm = load_muse("embedded", "verbmem", "forget").select(range(3))
    lengths = [len(tok(gt, add_special_tokens=False)["input_ids"]) for gt in vm["gt"]]
    limit = max(lengths) + 8  # every reference is shorter than the generation limit
    matched = evaluate_muse(model, tok, metrics=("verbmem_f",), max_samples=3, verbmem_max_new_tokens=limit)
    fixed = evaluate_muse(model, tok, metrics=("verbmem_f",), max_samples=3, verbmem_max_new_tokens=limit,
                          verbmem_match_reference_length=False)
    for b, (prompt, gt) in enumerate(zip(vm["prompt"], vm["gt"])):
        n = lengths[b]
        assert n < limit - 1
        assert matched.tables["verbmem_forget"].loc[b, "generation"] == muse_bench_generate(model, tok, prompt, n)
        assert fixed.tables["verbmem_forget"].loc[b, "generation"] == muse_bench_generate(model, tok, prompt, limit)
        assert matched.tables["verbmem_forget"].loc[b, "gt"] == fixed.tables["verbmem_forget"].loc[b, "gt"] == gt
