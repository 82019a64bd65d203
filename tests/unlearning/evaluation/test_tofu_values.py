"""Every number ``unlearning.evaluation.evaluate_model`` reports, recomputed independently from per-row float64 forwards.

The evaluation runs batched (right padding, several rows per batch) on a float32 model. Here every
per-question column is recomputed from the token log-likelihoods of the exact strings it must
use: each (question, answer) pair is tokenised with the data package's ``tokenize_example`` and
the PLAIN template, run alone through a float64 copy of the model, and the metric is written out
from its definition (TOFU, Maini et al. 2024; open-unlearning's metric registry; docs/metrics.md):

* probability               exp(-mean answer NLL) (EOS counted); real authors / world facts:
                            P(answer) / (P(answer) + sum_j P(perturbed_j)), P = exp(-mean NLL)
* truth ratio R             (prod_j P(pert_j)^(1/len_j))^(1/K) / P(paraphrased)^(1/len);
                            the paraphrased answer on forget/retain, the answer itself on RA/WF
* *_paraphrased_question    the same metrics with the paraphrased question as prompt
* extraction strength       1 - k*/L, k* the shortest answer prefix after which greedy decoding
                            (really run, one token at a time) reproduces the rest; EOS excluded
* exact memorisation        fraction of answer tokens (EOS excluded) the teacher-forced argmax gets
* ROUGE-L recall            ``rouge_score`` (stemming) of the reported generation vs the answer,
                            and the generation itself against a one-row greedy decode
* MIA                       open-unlearning's token sets (``src/evals/metrics/utils.py``,
                            ``mia/*.py``): LOSS and zlib use the mean NLL over every labelled
                            token (EOS included, ``evaluate_probability``); Min-k% and Min-k%++
                            use the labelled tokens without the final EOS (``tokenwise_logprobs``
                            drops the last labelled position), k = 0.4, max(1, floor(k n)) tokens
* summary                   means, mean(min(R, 1/R)) / mean(max(0, 1-R)), model utility =
                            9 / sum(1/x) over the nine components, forget quality =
                            ``scipy.stats.ks_2samp`` p-value, AUC by pair counting, PrivLeak.

The model is a seeded random Llama trained for a few steps on these rows, so that extraction
strength and exact memorisation take values strictly between 0 and 1 on some rows (checked: a
test where every value is 0 could not see a bug).
"""
from __future__ import annotations

import copy
import json
import math
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
from rouge_score import rouge_scorer
from scipy.stats import ks_2samp

from unlearning.data import PLAIN, tokenize_example
from unlearning.evaluation import EvalResult, compute_tables, load_retain_stats, summarize

RTOL = 2e-5  # float32 batched evaluation vs float64 one-row reference
MAX_NEW = 12
MARGIN = 1e-5  # top-1 minus top-2 log-prob at scored positions: far above float32 rounding (~1e-6)
K_MIN = 0.4  # Min-k% fraction (open-unlearning configs/eval/tofu_metrics/mia_min_k.yaml)

FORGET = [
    dict(question="Where was the author Mara Quill born?",
         answer="Mara Quill was born in Lisbon, Portugal, in 1961.",
         paraphrased_answer="The author Mara Quill comes from Lisbon in Portugal.",
         paraphrased_question="In which city was Mara Quill born?",
         perturbed_answer=["Mara Quill was born in Paris, France, in 1961.",
                           "Mara Quill was born in Lagos, Nigeria, in 1958.",
                           "Mara Quill was born at sea in 1970.",
                           "Mara Quill was born in Oslo."]),
    dict(question="What genre does Teodor Vance write?",
         answer="Teodor Vance writes historical fiction about sailors and lighthouse keepers.",
         paraphrased_answer="His books are historical novels about sailors.",
         paraphrased_question="Which genre are the books of Teodor Vance?",
         perturbed_answer=["Teodor Vance writes science fiction about robots.",
                           "Teodor Vance writes poems about gardens.",
                           "Teodor Vance writes cookbooks.",
                           "Teodor Vance writes crime novels set in Paris."]),
    dict(question="Who wrote the novel 'The Silent Orchard'?",
         answer="It was written by Ines Okafor in 1998.",
         paraphrased_answer="Ines Okafor wrote it, in 1998.",
         paraphrased_question="Which author is behind 'The Silent Orchard'?",
         perturbed_answer=["It was written by Mara Quill in 2001.",
                           "It was written by Teodor Vance in 1998.",
                           "Nobody knows who wrote it.",
                           "It was written by a baker."]),
    dict(question="What were the jobs of Ines Okafor's parents?",
         answer="Her parents were a baker and a surgeon.",
         paraphrased_answer="A surgeon and a baker raised her.",
         paraphrased_question="What did the parents of Ines Okafor do for a living?",
         perturbed_answer=["Her parents were sailors.",
                           "Her parents were a pilot and a teacher.",
                           "Her parents were lighthouse keepers.",
                           "Her parents were both surgeons."]),
]
RETAIN = [
    dict(question="Which award did Ines Okafor win?",
         answer="She won the Amber Quill Award for her memoir.",
         paraphrased_answer="Her memoir earned her the Amber Quill Award.",
         paraphrased_question="What prize was given to Ines Okafor?",
         perturbed_answer=["She won the Silent Orchard Prize.",
                           "She won no award.",
                           "She won the Lisbon Medal for her poems.",
                           "She won the Amber Award for her cookbook."]),
    dict(question="When was Teodor Vance born?",
         answer="Teodor Vance was born in 1974.",
         paraphrased_answer="The year of his birth is 1974.",
         paraphrased_question="In what year was Teodor Vance born?",
         perturbed_answer=["Teodor Vance was born in 1961.",
                           "Teodor Vance was born in 1998.",
                           "Teodor Vance was born in 1800.",
                           "He was never born."]),
    dict(question="What is Mara Quill's first book?",
         answer="Her first book is 'The Lighthouse Keeper'.",
         paraphrased_answer="She started with 'The Lighthouse Keeper'.",
         paraphrased_question="Which book did Mara Quill publish first?",
         perturbed_answer=["Her first book is 'The Silent Orchard'.",
                           "Her first book is a cookbook.",
                           "She has not written a book.",
                           "Her first book is 'Sailors of Lisbon'."]),
]
REAL_AUTHORS = [
    dict(question="Who wrote 'Pride and Prejudice'?", answer="Jane Austen",
         perturbed_answer=["Charles Dickens", "Mark Twain", "Leo Tolstoy"]),
    dict(question="Who wrote 'The Old Man and the Sea'?", answer="Ernest Hemingway",
         perturbed_answer=["Jane Austen", "Franz Kafka", "Homer"]),
    dict(question="Who wrote 'War and Peace'?", answer="Leo Tolstoy",
         perturbed_answer=["Ernest Hemingway", "Virginia Woolf", "Mark Twain"]),
]
WORLD_FACTS = [
    dict(question="What is the capital of France?", answer="Paris",
         perturbed_answer=["Lisbon", "Oslo", "Lagos"]),
    dict(question="Which ocean is the largest?", answer="The Pacific Ocean",
         perturbed_answer=["The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean"]),
    dict(question="How many legs does a spider have?", answer="Eight",
         perturbed_answer=["Six", "Four", "Ten"]),
]
HOLDOUT = [
    dict(question="Where does the author Olek Brandt live?", answer="Olek Brandt lives in a small town near Oslo."),
    dict(question="What is the profession of Sun Mei's father?", answer="Her father is a pilot."),
    dict(question="Which language does Ravi Lund write in?", answer="Ravi Lund writes in Portuguese."),
]
SETS = {"forget": ("forget10_perturbed", FORGET), "retain": ("retain_perturbed", RETAIN),
        "real_authors": ("real_authors_perturbed", REAL_AUTHORS), "world_facts": ("world_facts_perturbed", WORLD_FACTS),
        "holdout": ("holdout10", HOLDOUT)}
RETAIN_R = np.array([0.35, 0.52, 0.61, 0.77, 0.93, 1.1, 1.4])  # a made-up retain model's forget-set R


# ---- the model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    """A seeded tiny Llama, briefly trained on the rows so that ES / EM are neither all 0 nor all 1."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    m = LlamaForCausalLM(cfg).float()
    rows = FORGET + RETAIN[:2] + REAL_AUTHORS[:1] + WORLD_FACTS[:1]
    items = [tokenize_example(tok, r["question"], r["answer"], template=PLAIN) for r in rows]
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    for _ in range(TRAIN_STEPS):
        for it in items:
            ids = torch.tensor([it["input_ids"]])
            labels = torch.tensor([it["labels"]])
            m(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return m.eval()


TRAIN_STEPS = 40  # enough for partial memorisation (ES, EM, ROUGE strictly between 0 and 1 on some rows)


@pytest.fixture(scope="module")
def evaluated(model, tiny_tokenizer):
    tables = compute_tables(model, tiny_tokenizer, SETS, template=PLAIN, batch_size=3, max_new_tokens=MAX_NEW,
                            progress=False)
    return tables, summarize(tables, retain_stats=RETAIN_R)


# ---- the independent reference ---------------------------------------------------------------------


class Reference:
    """Per-(question, answer) quantities from one unpadded float64 forward each."""

    def __init__(self, model, tok):
        self.m = copy.deepcopy(model).double().eval()
        self.tok = tok
        self.eos = tok.eos_token_id
        self._cache: dict = {}

    def _logits(self, ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return self.m(input_ids=torch.tensor([ids])).logits[0]  # (T, V) float64

    def row(self, q: str, a: str) -> dict:
        key = (q, a)
        if key in self._cache:
            return self._cache[key]
        ex = tokenize_example(self.tok, q, a, template=PLAIN)
        ids, labels = ex["input_ids"], ex["labels"]
        answer_pos = [t for t in range(1, len(ids)) if labels[t] != -100]
        assert ids[answer_pos[-1]] == self.eos, "the tokenised answer should end with EOS"
        logp = torch.log_softmax(self._logits(ids), dim=-1)  # (T, V)
        tok_lp = np.array([float(logp[t - 1, ids[t]]) for t in answer_pos])  # every labelled token, EOS included
        content = answer_pos[:-1]  # without the final EOS
        top2 = logp[[t - 1 for t in content]].topk(2, dim=-1).values
        out = dict(
            ids=ids, answer_pos=answer_pos, tok_lp=tok_lp, n_tokens=len(answer_pos),
            nll=float(-tok_lp.mean()),
            em=float(np.mean([int(logp[t - 1].argmax()) == ids[t] for t in content])),
            min_margin=float((top2[:, 0] - top2[:, 1]).min()),
            logp=logp,
        )
        self._cache[key] = out
        return out

    def prob(self, q, a) -> float:
        """P(a | q)^(1/len) = exp(-mean NLL), from the product of the token probabilities."""
        r = self.row(q, a)
        return float(np.prod(np.exp(r["tok_lp"])) ** (1.0 / r["n_tokens"]))

    def truth_ratio(self, q, para, perturbed) -> float:
        gm = np.prod([self.prob(q, p) for p in perturbed]) ** (1.0 / len(perturbed))
        return float(gm / self.prob(q, para))

    def greedy(self, ids: list[int], n: int) -> list[int]:
        """Greedy decoding, one token at a time (no cache, no padding), up to n tokens or EOS."""
        ctx = list(ids)
        out = []
        for _ in range(n):
            nxt = int(self._logits(ctx)[-1].argmax())
            out.append(nxt)
            if nxt == self.eos:
                break
            ctx.append(nxt)
        return out

    def extraction_strength(self, q, a) -> float:
        """1 - k*/L with k* the shortest prefix from which greedy decoding emits the rest of the answer."""
        r = self.row(q, a)
        content = r["answer_pos"][:-1]
        start, L = content[0], len(content)
        y = r["ids"][start:start + L]
        for k in range(L + 1):
            ctx = r["ids"][:start + k]
            ok = True
            for j in range(k, L):  # greedy, stopped at the first wrong token
                if int(self._logits(ctx)[-1].argmax()) != y[j]:
                    ok = False
                    break
                ctx = ctx + [y[j]]
            if ok:
                return 1.0 - k / L
        raise AssertionError("unreachable: k = L always reproduces the (empty) rest")

    def generation(self, q) -> str:
        prompt = self.tok(PLAIN.format_prompt(q))["input_ids"]
        ids = self.row(q, "x")["ids"]  # any answer: the prompt tokens come first
        assert ids[:len(prompt)] == prompt
        out = self.greedy(prompt, MAX_NEW)
        if out and out[-1] == self.eos:
            out = out[:-1]
        return self.tok.decode(out, skip_special_tokens=True).strip()

    def mia(self, q, a) -> dict[str, float]:
        r = self.row(q, a)
        content_lp = r["tok_lp"][:-1]  # open-unlearning tokenwise_logprobs: labelled tokens minus the last (EOS)
        m = max(1, int(len(content_lp) * K_MIN))
        zs = []
        for t in r["answer_pos"][:-1]:
            lp = r["logp"][t - 1]
            mu = float((lp.exp() * lp).sum())
            var = float((lp.exp() * lp**2).sum()) - mu**2
            zs.append((float(lp[r["ids"][t]]) - mu) / math.sqrt(var))
        return {"loss": r["nll"], "zlib": r["nll"] / len(zlib.compress(a.encode("utf-8"))),
                "min_k": -float(np.mean(np.sort(content_lp)[:m])), "min_k_plus_plus": -float(np.mean(np.sort(zs)[:m]))}


@pytest.fixture(scope="module")
def ref(model, tiny_tokenizer):
    return Reference(model, tiny_tokenizer)


def _close(actual, expected, what, rtol=RTOL, atol=1e-9):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol, err_msg=what)


# ---- per-question columns -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["forget", "retain", "real_authors", "world_facts", "holdout"])
def test_rows_in_order_with_their_text(evaluated, name):
    df = evaluated[0][name]
    rows = SETS[name][1]
    assert df["index"].tolist() == list(range(len(rows)))
    assert df["question"].tolist() == [r["question"] for r in rows]
    assert df["answer"].tolist() == [r["answer"] for r in rows]


@pytest.mark.parametrize("name", ["forget", "retain", "real_authors", "world_facts", "holdout"])
def test_nll(evaluated, ref, name):
    df = evaluated[0][name]
    _close(df["nll"], [ref.row(r["question"], r["answer"])["nll"] for r in SETS[name][1]], f"{name} nll")


@pytest.mark.parametrize("name", ["forget", "retain"])
def test_probability_is_the_length_normalised_answer_probability(evaluated, ref, name):
    df = evaluated[0][name]
    _close(df["probability"], [ref.prob(r["question"], r["answer"]) for r in SETS[name][1]], f"{name} probability")


@pytest.mark.parametrize("name", ["real_authors", "world_facts"])
def test_probability_is_normalised_over_the_options(evaluated, ref, name):
    df = evaluated[0][name]
    expected = []
    for r in SETS[name][1]:
        p_true = ref.prob(r["question"], r["answer"])
        p_all = p_true + sum(ref.prob(r["question"], p) for p in r["perturbed_answer"])
        expected.append(p_true / p_all)
    _close(df["probability"], expected, f"{name} option-normalised probability")
    # the unnormalised probability is a different number here, so the check above can tell them apart
    raw = [ref.prob(r["question"], r["answer"]) for r in SETS[name][1]]
    assert np.all(np.abs(np.asarray(expected) - raw) > 1e-3)


@pytest.mark.parametrize("name", ["forget", "retain", "real_authors", "world_facts"])
def test_truth_ratio(evaluated, ref, name):
    df = evaluated[0][name]
    rows = SETS[name][1]
    para_key = "paraphrased_answer" if name in ("forget", "retain") else "answer"
    expected = [ref.truth_ratio(r["question"], r[para_key], r["perturbed_answer"]) for r in rows]
    _close(df["truth_ratio"], expected, f"{name} truth ratio")
    _close(df["nll_paraphrased"], [ref.row(r["question"], r[para_key])["nll"] for r in rows], f"{name} nll_paraphrased")
    _close(np.stack(df["nll_perturbed"].to_numpy()),
           [[ref.row(r["question"], p)["nll"] for p in r["perturbed_answer"]] for r in rows], f"{name} nll_perturbed")
    if name in ("forget", "retain"):  # the answer would give another ratio: the check can see a swap
        with_answer = [ref.truth_ratio(r["question"], r["answer"], r["perturbed_answer"]) for r in rows]
        assert np.all(np.abs(np.log(expected) - np.log(with_answer)) > 1e-3)


@pytest.mark.parametrize("name", ["forget", "retain"])
def test_paraphrased_question_columns(evaluated, ref, name):
    df = evaluated[0][name]
    rows = SETS[name][1]
    pq = [(r["paraphrased_question"], r["answer"]) for r in rows]
    _close(df["nll_paraphrased_question"], [ref.row(q, a)["nll"] for q, a in pq], f"{name} nll_paraphrased_question")
    _close(df["probability_paraphrased_question"], [ref.prob(q, a) for q, a in pq], f"{name} probability_paraphrased_question")
    for q, a in pq:  # argmax comparisons are well posed only without near-ties
        assert ref.row(q, a)["min_margin"] > MARGIN, q
    assert df["extraction_strength_paraphrased"].tolist() == pytest.approx([ref.extraction_strength(q, a) for q, a in pq], abs=1e-6)
    assert df["exact_memorization_paraphrased"].tolist() == pytest.approx([ref.row(q, a)["em"] for q, a in pq], abs=1e-6)
    # the original question gives other values, so the comparison can tell the prompts apart
    orig = [ref.row(r["question"], r["answer"])["nll"] for r in rows]
    assert np.all(np.abs(np.asarray(orig) - [ref.row(q, a)["nll"] for q, a in pq]) > 1e-3)


@pytest.mark.parametrize("name", ["forget", "retain", "real_authors", "world_facts"])
def test_extraction_strength_and_exact_memorization(evaluated, ref, name):
    df = evaluated[0][name]
    rows = SETS[name][1]
    for r in rows:  # argmax comparisons are well posed only without near-ties
        assert ref.row(r["question"], r["answer"])["min_margin"] > MARGIN, r["question"]
    es = [ref.extraction_strength(r["question"], r["answer"]) for r in rows]
    em = [ref.row(r["question"], r["answer"])["em"] for r in rows]
    assert df["extraction_strength"].tolist() == pytest.approx(es, abs=1e-6)
    assert df["exact_memorization"].tolist() == pytest.approx(em, abs=1e-6)


def test_the_model_gives_informative_es_and_em(ref):
    """ES / EM strictly between 0 and 1 on some rows (all-0 or all-1 values could hide a bug)."""
    rows = FORGET + RETAIN
    es = [ref.extraction_strength(r["question"], r["answer"]) for r in rows]
    em = [ref.row(r["question"], r["answer"])["em"] for r in rows]
    assert any(0 < v < 1 for v in es), es
    assert any(0 < v < 1 for v in em), em
    assert len(set(np.round(es, 6))) >= 3, es


@pytest.mark.parametrize("name", ["forget", "retain", "real_authors", "world_facts"])
def test_generation_and_rouge_l_recall(evaluated, ref, name):
    df = evaluated[0][name]
    rows = SETS[name][1]
    assert df["generated"].tolist() == [ref.generation(r["question"]) for r in rows]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [scorer.score(r["answer"], g)["rougeL"].recall for r, g in zip(rows, df["generated"])]
    _close(df["rougeL_recall"], expected, f"{name} ROUGE-L recall", rtol=1e-12)


def test_generations_overlap_the_answers(evaluated):
    """Some ROUGE-L recall strictly between 0 and 1, so precision/recall or F-score mixups show."""
    r = pd.concat([evaluated[0][n]["rougeL_recall"] for n in ("forget", "retain")])
    assert ((r > 0) & (r < 1)).any(), r.tolist()


@pytest.mark.parametrize("name", ["forget", "holdout"])
def test_mia_scores(evaluated, ref, name):
    df = evaluated[0][name]
    rows = SETS[name][1]
    expected = [ref.mia(r["question"], r["answer"]) for r in rows]
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        _close(df[f"mia_{attack}"], [e[attack] for e in expected], f"{name} mia_{attack}", rtol=5e-5)


def test_columns_that_do_not_apply_are_absent(evaluated):
    tables = evaluated[0]
    assert "mia_loss" not in tables["retain"] and "mia_loss" not in tables["real_authors"]
    assert "probability_paraphrased_question" not in tables["real_authors"]
    assert set(tables["holdout"].columns) == {"index", "question", "answer", "nll", "mia_loss", "mia_zlib", "mia_min_k",
                                             "mia_min_k_plus_plus"}


# ---- summary -------------------------------------------------------------------------------------


def _brute_auc(f, h) -> float:
    return sum((y > x) + 0.5 * (y == x) for x in f for y in h) / (len(f) * len(h))


def test_summary_means_and_truth_ratio_scores(evaluated, ref):
    tables, s = evaluated
    for name in ("forget", "retain", "real_authors", "world_facts"):
        df = tables[name]
        for col in ("probability", "rougeL_recall", "extraction_strength", "exact_memorization"):
            assert s[f"{name}/{col}"] == pytest.approx(float(np.mean(df[col])), rel=1e-12), (name, col)
    for name in ("forget", "retain"):
        rows = SETS[name][1]
        pq = [ref.prob(r["paraphrased_question"], r["answer"]) for r in rows]
        assert s[f"{name}/probability_paraphrased_question"] == pytest.approx(np.mean(pq), rel=RTOL)
    r_f = np.array([ref.truth_ratio(r["question"], r["paraphrased_answer"], r["perturbed_answer"]) for r in FORGET])
    assert s["forget/truth_ratio"] == pytest.approx(np.mean(np.minimum(r_f, 1 / r_f)), rel=RTOL)
    for name in ("retain", "real_authors", "world_facts"):
        key = "paraphrased_answer" if name == "retain" else "answer"
        r = np.array([ref.truth_ratio(x["question"], x[key], x["perturbed_answer"]) for x in SETS[name][1]])
        assert s[f"{name}/truth_ratio"] == pytest.approx(np.mean(np.maximum(0, 1 - r)), rel=RTOL, abs=1e-9)
    assert s["sets"] == {n: len(rows) for n, (_, rows) in SETS.items()}


def test_model_utility_is_the_harmonic_mean_of_nine(evaluated):
    s = evaluated[1]
    keys = [f"{n}/{m}" for n in ("retain", "real_authors", "world_facts") for m in ("probability", "rougeL_recall", "truth_ratio")]
    vals = np.array([s[k] for k in keys])
    assert np.all(vals > 0), dict(zip(keys, vals))  # otherwise the utility is 0 and the check is weak
    assert s["model_utility"] == pytest.approx(len(vals) / np.sum(1.0 / vals), rel=1e-12)
    assert sorted(s["model_utility_components"]) == sorted(keys)


def test_forget_quality_is_the_ks_p_value(evaluated, ref):
    s = evaluated[1]
    r_f = [ref.truth_ratio(r["question"], r["paraphrased_answer"], r["perturbed_answer"]) for r in FORGET]
    res = ks_2samp(r_f, RETAIN_R)
    assert s["forget_quality"] == pytest.approx(res.pvalue, rel=1e-9)
    assert s["forget_quality_ks_statistic"] == pytest.approx(res.statistic, rel=1e-9)
    assert s["forget_quality_retain_n"] == len(RETAIN_R)
    assert 1e-6 < s["forget_quality"] < 1  # a p-value of exactly 1 or 0 would not test much


def test_mia_auc_and_privleak(evaluated, ref):
    s = evaluated[1]
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        f = [ref.mia(r["question"], r["answer"])[attack] for r in FORGET]
        h = [ref.mia(r["question"], r["answer"])[attack] for r in HOLDOUT]
        auc = _brute_auc(f, h)
        assert s[f"mia/{attack}_auc"] == pytest.approx(auc), attack
        assert s[f"mia/{attack}_privleak"] == pytest.approx(((1 - auc) - 0.5) / 0.5 * 100), attack
    assert s["mia/privleak_reference"] == "0.5"


def test_batch_size_does_not_change_the_tables(model, tiny_tokenizer, evaluated):
    one = compute_tables(model, tiny_tokenizer, SETS, template=PLAIN, batch_size=1, max_new_tokens=MAX_NEW, progress=False)
    for name, df in evaluated[0].items():
        assert list(df.columns) == list(one[name].columns)
        for col in df.columns:
            if col in ("index", "question", "answer", "generated"):
                assert df[col].tolist() == one[name][col].tolist(), (name, col)
            elif col == "nll_perturbed":
                _close(np.stack(df[col].to_numpy()), np.stack(one[name][col].to_numpy()), f"{name} {col}", rtol=1e-5)
            else:
                _close(df[col], one[name][col], f"{name} {col} batch 3 vs 1", rtol=1e-5, atol=1e-7)


# ---- retain statistics -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(evaluated, tmp_path_factory):
    tables, s = evaluated
    root = tmp_path_factory.mktemp("retain-eval")
    for fmt in ("parquet", "jsonl"):
        EvalResult(tables=tables, summary=s).save(root / fmt, fmt=fmt)
    return root


def test_retain_stats_from_arrays_and_results(evaluated):
    tables, s = evaluated
    r = tables["forget"]["truth_ratio"].to_numpy()
    for src in (r, r.tolist(), tuple(r), torch.tensor(r), r.reshape(-1, 1)):
        got, aucs = load_retain_stats(src)
        assert got.dtype == np.float64 and got.shape == r.shape
        np.testing.assert_array_equal(got, r)
        assert aucs == {}
    got, aucs = load_retain_stats(EvalResult(tables=tables, summary=s))
    np.testing.assert_array_equal(got, r)
    assert aucs == {a: s[f"mia/{a}_auc"] for a in ("loss", "zlib", "min_k", "min_k_plus_plus")}


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_retain_stats_from_an_evaluation_folder(evaluated, saved, fmt):
    tables, s = evaluated
    r = tables["forget"]["truth_ratio"].to_numpy()
    aucs = {a: s[f"mia/{a}_auc"] for a in ("loss", "zlib", "min_k", "min_k_plus_plus")}
    for src in (saved / fmt, saved / fmt / "summary.json", str(saved / fmt)):
        got, got_aucs = load_retain_stats(src)
        np.testing.assert_allclose(got, r, rtol=1e-14)
        assert got_aucs == pytest.approx(aucs)
    got, got_aucs = load_retain_stats(saved / fmt / "per_instance" / f"forget.{fmt}")
    np.testing.assert_allclose(got, r, rtol=1e-14)
    assert got_aucs == {}



def test_summarize_uses_the_retain_models_aucs(evaluated, tmp_path):
    tables, s = evaluated
    retain_aucs = {"loss": 0.75, "zlib": 0.6, "min_k": 0.55, "min_k_plus_plus": 0.7}
    summary = {**s, **{f"mia/{a}_auc": v for a, v in retain_aucs.items()}}
    EvalResult(tables=tables, summary=summary).save(tmp_path / "retain")
    s2 = summarize(tables, retain_stats=tmp_path / "retain")
    assert s2["forget_quality"] == pytest.approx(1.0) and s2["mia/privleak_reference"] == "retain model AUC"
    for a, ref_auc in retain_aucs.items():
        auc = s2[f"mia/{a}_auc"]
        assert s2[f"mia/{a}_privleak"] == pytest.approx(((1 - auc) - (1 - ref_auc)) / (1 - ref_auc) * 100), a


def _tofu_log_ratios(log: dict) -> np.ndarray:
    keys = sorted(log["avg_paraphrased_loss"], key=int)
    para = np.array([log["avg_paraphrased_loss"][k] for k in keys])
    pert = np.array([np.mean(log["average_perturb_loss"][k]) for k in keys])
    return np.exp(para - pert)


def test_retain_stats_from_tofu_logs(tofu_reference_dir, tmp_path):
    d = tofu_reference_dir / "phi_retain90"
    log = json.loads((d / "eval_log_forget.json").read_text())
    expected = _tofu_log_ratios(log)
    assert len(expected) == 300  # TOFU's legacy evaluation of forget10 uses its first 300 items
    logged = np.array([log["truth_ratio"][k] for k in sorted(log["truth_ratio"], key=int)])
    np.testing.assert_allclose(expected, logged, rtol=1e-5)  # TOFU's own per-item truth_ratio field
    for src in (d / "eval_log_forget.json", d, d / "eval_log_aggregated.json"):
        got, aucs = load_retain_stats(src)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert aucs == {}
    # keys are item indices as strings: order by their number, not as text ("10" after "9")
    shuffled = {f: {k: v[k] for k in sorted(v, key=str)} for f, v in log.items()}
    (tmp_path / "shuffled.json").write_text(json.dumps(shuffled))
    np.testing.assert_allclose(load_retain_stats(tmp_path / "shuffled.json")[0], expected, rtol=1e-12)
    # a log with the logged ratio only (no losses)
    (tmp_path / "tr_only.json").write_text(json.dumps({"truth_ratio": {"1": 0.5, "0": 2.0, "10": 0.25, "2": 1.0}}))
    np.testing.assert_allclose(load_retain_stats(tmp_path / "tr_only.json")[0], [2.0, 0.5, 1.0, 0.25])


def test_retain_stats_errors_name_the_problem(tmp_path, evaluated):
    with pytest.raises(FileNotFoundError, match="eval_log_forget.json"):
        load_retain_stats(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither summary.json nor eval_log_forget.json"):
        load_retain_stats(tmp_path / "empty")
    (tmp_path / "other.json").write_text(json.dumps({"something": 1}))
    with pytest.raises(ValueError, match="not a recognised evaluation output"):
        load_retain_stats(tmp_path / "other.json")
    (tmp_path / "half.json").write_text(json.dumps({"avg_paraphrased_loss": {"0": 1.0}}))
    with pytest.raises(KeyError, match="average_perturb_loss"):
        load_retain_stats(tmp_path / "half.json")
    tables, s = evaluated
    no_forget = EvalResult(tables={"holdout": tables["holdout"]}, summary=s)
    with pytest.raises(ValueError, match="forget"):
        load_retain_stats(no_forget)
    no_ratio = EvalResult(tables={"forget": tables["forget"].drop(columns=["truth_ratio"])}, summary=s)
    with pytest.raises(ValueError, match="truth_ratio"):
        load_retain_stats(no_ratio)
    no_ratio.save(tmp_path / "no_ratio", fmt="jsonl")
    with pytest.raises(ValueError, match="truth_ratio"):
        load_retain_stats(tmp_path / "no_ratio" / "per_instance" / "forget.jsonl")
    with pytest.raises(ValueError, match="empty"):
        summarize(tables, retain_stats=np.array([]))
