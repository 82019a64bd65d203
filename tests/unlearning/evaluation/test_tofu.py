"""evaluate_model / CLI / EvalCallback end to end on the tiny random Llama and the embedded data."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unlearning.cli.evaluate import main  # noqa: E402
from unlearning.evaluation import (EvalResult, compute_tables, evaluate_model, load_eval_sets, load_retain_stats,  # noqa: E402
                                   merge_shards, summarize)
from unlearning.metrics import aggregate as agg  # noqa: E402
from unlearning.callbacks import EvalCallback  # noqa: E402

KW = dict(batch_size=3, max_new_tokens=4, subset=5, progress=False)


@pytest.fixture(scope="module")
def result(tiny_llama, tiny_tokenizer):
    return evaluate_model(tiny_llama, tiny_tokenizer, "embedded", "forget10", **KW)


def test_tables_and_summary(result):
    s, t = result.summary, result.tables
    assert "forget" in t and len(t["forget"]) == 5
    f = t["forget"]
    for col in ("probability", "truth_ratio", "extraction_strength", "exact_memorization", "rougeL_recall",
                "extraction_strength_paraphrased", "probability_paraphrased_question", "mia_min_k", "generated"):
        assert col in f, col
    assert np.all((f["extraction_strength"] >= 0) & (f["extraction_strength"] <= 1))
    assert s["forget/truth_ratio"] == pytest.approx(agg.forget_truth_ratio(f["truth_ratio"]))
    assert s["sets"]["forget"] == 5 and s["splits"]["forget"].endswith("_perturbed")
    # the embedded benchmark has every set; a missing one would silently drop checks below
    assert set(t) == {"forget", "retain", "real_authors", "world_facts", "holdout"}
    assert 0.0 <= s["mia/loss_auc"] <= 1.0
    assert "forget_quality" not in s  # no retain stats given
    assert s["retain/truth_ratio"] == pytest.approx(agg.utility_truth_ratio(t["retain"]["truth_ratio"]))
    assert len(s["model_utility_components"]) == 9 and 0 <= s["model_utility"] <= 1


def test_sharded_tables_merge_to_the_unsharded_ones(tiny_llama, tiny_tokenizer, result):
    sets = load_eval_sets("embedded", "forget10", sets=("forget", "holdout"), subset=5)
    shards = [compute_tables(tiny_llama, tiny_tokenizer, sets, shard=(r, 2), batch_size=3, generate=False, progress=False)
              for r in range(2)]
    merged = merge_shards(shards)
    assert set(merged) == {"forget", "holdout"}
    for name in ("forget", "holdout"):
        assert merged[name]["index"].tolist() == list(range(len(result.tables[name])))
        for col in ("nll", "mia_min_k_plus_plus") + (("truth_ratio", "extraction_strength") if name == "forget" else ()):
            np.testing.assert_allclose(merged[name][col], result.tables[name][col], rtol=1e-4, atol=1e-6)
    assert summarize(merged)["sets"]["forget"] == 5


def test_retain_stats_sources(result, tmp_path, tofu_reference_dir):
    r = result.tables["forget"]["truth_ratio"].to_numpy()
    s = summarize(result.tables, retain_stats=r)
    assert s["forget_quality"] == pytest.approx(1.0)  # identical distributions
    result.save(tmp_path / "ev", fmt="jsonl")
    for src in (tmp_path / "ev", tmp_path / "ev" / "summary.json", tmp_path / "ev" / "per_instance" / "forget.jsonl"):
        np.testing.assert_allclose(load_retain_stats(src)[0], r, rtol=1e-12)
    ref = tofu_reference_dir / "phi_retain90"
    off = load_retain_stats(ref / "eval_log_forget.json")[0]
    logged = json.loads((ref / "eval_log_forget.json").read_text())["truth_ratio"]
    np.testing.assert_allclose(off, [float(logged[k]) for k in sorted(logged, key=int)], rtol=1e-5)
    assert "forget_quality" in summarize(result.tables, retain_stats=ref)


def test_summary_json_is_strict(tmp_path):
    """NaN (an undefined metric) is written as null, numpy values as plain numbers."""
    summary = {"forget/probability": np.float32(0.25), "mia/loss_auc": float("nan"), "sets": {"forget": np.int64(3)}}
    EvalResult(tables={}, summary=summary).save(tmp_path)
    text = (tmp_path / "summary.json").read_text()
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert back == {"forget/probability": 0.25, "mia/loss_auc": None, "sets": {"forget": 3}}


def test_cli_end_to_end(tiny_llama, tiny_tokenizer, tmp_path):
    model_dir = tmp_path / "model"
    tiny_llama.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    out = tmp_path / "eval"
    common = ["--model", str(model_dir), "--data", "embedded", "--split", "forget10", "--max-samples", "4",
              "--batch-size", "4", "--max-new-tokens", "3", "--no-progress"]
    summary = main(common + ["--retain-model", str(model_dir), "--output-dir", str(out)])
    assert summary["forget_quality"] == pytest.approx(1.0)  # the retain model is the same model
    assert (out / "summary.json").is_file() and (out / "per_instance" / "forget.parquet").is_file()
    loaded = EvalResult.load(out)
    assert loaded.summary["sets"]["forget"] == 4 and len(loaded.tables["forget"]) == 4
    assert not list(out.rglob("*.tmp"))
    s2 = main(common + ["--retain-logs", str(out), "--output-dir", str(tmp_path / "eval2"), "--format", "jsonl", "--no-generate"])
    assert s2["forget_quality"] == pytest.approx(1.0)
    assert (tmp_path / "eval2" / "per_instance" / "forget.jsonl").is_file()


def test_eval_callback_every_k_steps(tiny_llama, tiny_tokenizer, tmp_path):
    cb = EvalCallback(tiny_tokenizer, "embedded", "forget10", every_steps=2, per_epoch=False, sets=("forget", "holdout"),
                      subset=3, batch_size=3, max_new_tokens=2, generate=False)
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=1, epoch=0.5, log_history=[])
    cb.on_step_end(args, state, None, model=tiny_llama)
    assert cb.history == []
    state.global_step = 2
    cb.on_step_end(args, state, None, model=tiny_llama)
    assert len(cb.history) == 1 and cb.history[0]["step"] == 2 and cb.history[0]["world_size"] == 1
    assert (tmp_path / "eval" / "step-2" / "summary.json").is_file()
    assert len((tmp_path / "eval" / "history.jsonl").read_text().splitlines()) == 1
    assert any("eval/forget/truth_ratio" in h for h in state.log_history)
    assert tiny_llama.training is False and torch.is_grad_enabled()


@pytest.mark.slow
def test_trained_target_vs_retain_model(tiny_prepared):
    """Trained tiny pair: the target extracts its forget answers, the retain model does not."""
    from unlearning.models import load_model_and_tokenizer, tiny_source

    cfg = tiny_source().embedded
    kw = dict(sets=("forget", "holdout"), generate=False, progress=False, data_config=cfg, batch_size=16)
    rm, rt = load_model_and_tokenizer(tiny_prepared.retain)
    ret = evaluate_model(rm, rt, **kw)
    tm, tt = load_model_and_tokenizer(tiny_prepared.target)
    tgt = evaluate_model(tm, tt, retain_stats=ret, **kw)
    es_t, es_r = tgt.summary["forget/extraction_strength"], ret.summary["forget/extraction_strength"]
    assert es_t > 0.5 and es_t > es_r + 0.3, (es_t, es_r)
    assert tgt.summary["forget/exact_memorization"] > ret.summary["forget/exact_memorization"]
    assert tgt.summary["mia/loss_auc"] > 0.9
    assert tgt.summary["forget_quality"] < 0.05  # the target's truth ratios differ from the retain model's
    assert tgt.summary["mia/privleak_reference"] == "retain model AUC"


def test_eval_callback_evaluates_on_the_run_data_source(tiny_llama, tiny_tokenizer, tmp_path):
    """A model built on a non-default embedded benchmark is evaluated on that benchmark (the
    callback used to drop the data configuration and read the default one), and at the
    requested trajectory steps, step 0 included."""
    from unlearning.data import DataSource, EmbeddedConfig

    cfg = EmbeddedConfig(num_authors=3, qa_per_author=6, num_real_authors=8)
    source = DataSource(embedded=cfg)
    cb = EvalCallback(tiny_tokenizer, source, "forget10", at_steps=(0, 3), per_epoch=False, sets=("forget", "retain"),
                      batch_size=8, max_new_tokens=2, generate=False)
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=0, epoch=0.0, log_history=[])
    cb.on_train_begin(args, state, None, model=tiny_llama)
    for step in (1, 2, 3):
        state.global_step = step
        cb.on_step_end(args, state, None, model=tiny_llama)
    assert [h["step"] for h in cb.history] == [0, 3]
    want = {"forget": len(source.load_split("forget10_perturbed")), "retain": len(source.load_split("retain_perturbed"))}
    default = len(DataSource().load_split("forget10_perturbed"))
    assert cb.history[0]["sets"] == want and want["forget"] != default
    questions = set(cb._eval_sets["forget"][1][i]["question"] for i in range(want["forget"]))
    assert questions == set(source.load_split("forget10_perturbed")["question"])
