"""The benchmark interface of the study (analyses.studies): configs, data, gates, metrics, frames, plots.

Fast: no default model is prepared; the pieces that need a model use a tiny randomly
initialised Llama and a tokenizer trained on the embedded corpora in the test.
"""
from __future__ import annotations

import dataclasses
import json
import re
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from analyses.config import STAGES, BaseStudyConfig, StudyConfig, parse_study_args, stage_fields, stage_key
from analyses.findings import compute_findings, matched_utility
from analyses.frames import collect_frames, trajectory_frame
from analyses.gate import check_muse, check_wmdp
from analyses.methods import MethodSpec
from analyses.plots import tradeoff, trajectory
from analyses.studies import BENCHMARKS, MuseBenchmark, MuseStudyConfig, TofuBenchmark, WmdpBenchmark, WmdpStudyConfig, benchmark_for
from analyses.studies.base import Axes, StepEvalCallback, total_steps
from analyses.studies.muse import QUICK_CORPUS as MUSE_QUICK
from analyses.studies.text import grouped_texts
from analyses.studies.wmdp import QUICK_CORPUS as WMDP_QUICK
from analyses.studies.wmdp import exercise_text, rmu_layers
from unlearning.data import load_muse, load_wmdp_questions, muse_texts, wmdp_texts
from unlearning.metrics.multiple_choice import LETTERS, mc_context, mc_description, mc_table

CONFIGS = [StudyConfig, MuseStudyConfig, WmdpStudyConfig]


# --------------------------------------------------------------------------- configs
def test_benchmark_for_picks_the_config_class(tmp_path):
    assert isinstance(benchmark_for(StudyConfig(output_dir=str(tmp_path))), TofuBenchmark)
    assert isinstance(benchmark_for(MuseStudyConfig(output_dir=str(tmp_path))), MuseBenchmark)
    assert isinstance(benchmark_for(WmdpStudyConfig(output_dir=str(tmp_path))), WmdpBenchmark)
    assert set(BENCHMARKS) == {"tofu", "muse", "wmdp"}
    with pytest.raises(TypeError, match="no benchmark takes"):
        benchmark_for(BaseStudyConfig())
    with pytest.raises(TypeError, match="needs a MuseStudyConfig"):
        MuseBenchmark(StudyConfig())


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_declares_stages_and_help(config_class):
    for f in dataclasses.fields(config_class):
        assert set(f.metadata.get("stages", ("?",))) <= set(STAGES), (config_class.__name__, f.name)
        assert f.metadata.get("help"), (config_class.__name__, f.name)


@pytest.mark.parametrize("config_class, prog", [(MuseStudyConfig, "python -m analyses muse"),
                                                (WmdpStudyConfig, "python -m analyses wmdp")])
def test_text_study_cli(config_class, prog, capsys):
    default = parse_study_args([], config_class=config_class)
    assert isinstance(default, config_class) and not default.quick and default.eval_subset is None
    quick = parse_study_args(["--quick", "--methods", "ga,npo"], config_class=config_class)
    assert quick.quick and quick.max_steps == config_class.QUICK["max_steps"] and quick.methods == ["ga", "npo"]
    assert config_class.quick_config().geffect_probe_size == config_class.QUICK["geffect_probe_size"]
    with pytest.raises(SystemExit):
        parse_study_args(["--help"], config_class=config_class, prog=prog)
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith(f"usage: {prog}")
    for f in dataclasses.fields(config_class):
        assert f"--{f.name}" in text and " ".join(f.metadata["help"].split())[:30] in text, f.name


def test_text_config_validation():
    with pytest.raises(ValueError, match="--packing"):
        MuseStudyConfig(packing="sentences")
    with pytest.raises(ValueError, match="--subsets"):
        WmdpStudyConfig(subsets=["physics"])
    with pytest.raises(ValueError, match="--rmu-preset"):
        WmdpStudyConfig(rmu_preset="zephyr")
    assert WmdpStudyConfig(subsets=["bio,cyber"], forget_corpora=["cyber-forget"]).subsets == ["bio", "cyber"]


def _keys(config) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in STAGES:
        keys[stage] = stage_key(config, stage, keys)
    return keys


@pytest.mark.parametrize("config_class, field_name, value, changed", [
    (MuseStudyConfig, "qa_texts", False, {"models", "references", "masks", "methods"}),
    (MuseStudyConfig, "retain_split", "retain2", {"masks", "methods"}),
    (MuseStudyConfig, "verbmem_max_new_tokens", 64, {"references", "methods"}),
    (MuseStudyConfig, "gate_verbmem_gap", 0.1, set()),
    (WmdpStudyConfig, "forget_corpora", ["cyber-forget"], {"models", "references", "masks", "methods"}),
    (WmdpStudyConfig, "max_length", 64, {"references", "masks", "methods"}),
    (WmdpStudyConfig, "rmu_preset", "geffect", set()),  # part of the method spec, which the method key holds
])
def test_text_cache_keys_follow_the_declared_fields(config_class, field_name, value, changed):
    base = config_class()
    other = dataclasses.replace(base, **{field_name: value})
    a, b = _keys(base), _keys(other)
    assert {s for s in STAGES if a[s] != b[s]} == changed
    assert field_name in {f for s in changed for f in stage_fields(s, config_class)} or not changed


def test_tofu_stage_keys_are_those_of_before_the_benchmarks():
    """The TOFU keys hash the same fields as before the benchmarks refactor (the unlearning knobs under their
    ``UnlearningArguments`` names since the study took those names)."""
    assert stage_fields("models") == ["data", "model", "retain_model", "quick", "split", "max_authors"]
    assert set(stage_fields("methods")) == {
        "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
        "learning_rate", "geffect_every", "geffect_probe_size", "pg_effect",
        "trajectory_points", "eval_subset", "eval_batch_size", "max_length", "attribution_examples",
        "attribution_steps", "device", "bf16", "seed", "retain_holdout", "max_new_tokens"}


def test_total_steps_counts_like_the_trainer():
    assert total_steps(24, MuseStudyConfig(per_device_train_batch_size=4, num_train_epochs=1.0)) == 6
    assert total_steps(25, MuseStudyConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2,
                                           num_train_epochs=2.0)) == 6
    assert total_steps(24, MuseStudyConfig(max_steps=5)) == 5


# --------------------------------------------------------------------------- data
def test_grouped_texts_keeps_every_item_once_per_repeat():
    items = [f"Q{i}" for i in range(10)]
    out = grouped_texts(items, 4, seed=3, repeats=2)
    assert len(out) == 6 and all(len(t.split("\n\n")) <= 4 for t in out)
    parts = [p for t in out for p in t.split("\n\n")]
    assert sorted(parts) == sorted(items * 2)
    assert out == grouped_texts(items, 4, seed=3, repeats=2) and out != grouped_texts(items, 4, seed=4, repeats=2)
    with pytest.raises(ValueError):
        grouped_texts(items, 0)


def test_muse_benchmark_texts(tmp_path):
    bench = MuseBenchmark(MuseStudyConfig.quick_config(output_dir=str(tmp_path)))
    assert bench.embedded == MUSE_QUICK
    forget = bench.forget_texts()
    assert forget == muse_texts("embedded", "forget", embedded=MUSE_QUICK) and len(forget) == 6
    target, retain = bench.model_texts()
    assert set(forget) <= set(target) and not set(forget) & set(retain)
    questions = [r["question"] for r in load_muse("embedded", "knowmem", "forget_qa", embedded=MUSE_QUICK)]
    assert all(any(q in t for t in target) for q in questions)  # the forget QA pairs are in the target's texts
    assert not any(q in t for q in questions for t in retain)    # and never in the retain model's
    no_qa = MuseBenchmark(MuseStudyConfig.quick_config(output_dir=str(tmp_path), qa_texts=False)).model_texts()
    assert len(no_qa[0]) == 18 and len(no_qa[1]) == 12


def test_folders_give_the_embedded_texts(tmp_path, muse_folder, wmdp_folder):
    embedded = MuseBenchmark(MuseStudyConfig.quick_config(output_dir=str(tmp_path)))
    folder = MuseBenchmark(MuseStudyConfig.quick_config(output_dir=str(tmp_path), data=str(muse_folder)))
    assert folder.embedded is None
    assert folder.model_texts() == embedded.model_texts() and folder.retain_texts() == embedded.retain_texts()
    w_embedded = WmdpBenchmark(WmdpStudyConfig.quick_config(output_dir=str(tmp_path)))
    w_folder = WmdpBenchmark(WmdpStudyConfig.quick_config(output_dir=str(tmp_path), data=str(wmdp_folder)))
    assert w_folder.model_texts() == w_embedded.model_texts() and w_folder.forget_texts() == w_embedded.forget_texts()


def test_wmdp_sources_and_exercises(tmp_path):
    hub = WmdpBenchmark(WmdpStudyConfig(data="cais/wmdp", output_dir=str(tmp_path)))
    assert (hub.corpus_source, hub.utility_source) == ("cais/wmdp-corpora", "cais/mmlu")
    own = WmdpBenchmark(WmdpStudyConfig(data="cais/wmdp", corpora="/c", utility_data="/u", output_dir=str(tmp_path)))
    assert (own.corpus_source, own.utility_source) == ("/c", "/u")
    bench = WmdpBenchmark(WmdpStudyConfig.quick_config(output_dir=str(tmp_path)))
    assert bench.use_exercises and not WmdpBenchmark(WmdpStudyConfig(model="m", output_dir=str(tmp_path))).use_exercises
    docs, forget = bench.forget_documents(), bench.forget_texts()
    assert forget[:len(docs)] == docs and len(forget) == len(docs) + 2 * 12  # 6 documents x 2 questions, bio + cyber
    target, retain = bench.model_texts()
    assert set(forget) <= set(target) and not set(forget) & set(retain)
    assert retain[:6] == wmdp_texts("embedded", "wikitext", embedded=WMDP_QUICK)


def test_exercise_text_is_the_scored_prompt_and_answer():
    row = {"question": "Which insect carries the Velmi blight? ", "choices": ["a", "b", "c", "d"], "answer": 2}
    desc = mc_description("biology")
    assert exercise_text(row, desc) == mc_context(row["question"], row["choices"], desc) + " C"
    assert exercise_text(row, desc).endswith("\nAnswer: C") and LETTERS[row["answer"]] == "C"


def test_rmu_layers_keep_the_official_blocks_or_the_relative_depth():
    assert rmu_layers(7, 32) == (7, [5, 6, 7])
    assert rmu_layers(7, 8) == (7, [5, 6, 7])
    assert rmu_layers(7, 4) == (1, [0, 1])
    assert rmu_layers(7, 2) == (0, [0])
    assert rmu_layers(2, 4) == (2, [0, 1, 2])


# --------------------------------------------------------------------------- a tiny model
@pytest.fixture(scope="module")
def tiny():
    from unlearning.models import DefaultRecipe, build_model, train_tokenizer

    texts = muse_texts("embedded", "forget", embedded=MUSE_QUICK) + wmdp_texts("embedded", "wikitext", embedded=WMDP_QUICK)
    tok = train_tokenizer(texts, vocab_size=300)
    recipe = DefaultRecipe(hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64, max_length=256, seed=0)
    return build_model(tok, recipe).eval(), tok


def test_rmu_overrides_train_only_the_preset_parameters(tiny, tmp_path):
    model, _ = tiny
    bench = WmdpBenchmark(WmdpStudyConfig.quick_config(output_dir=str(tmp_path)))
    spec = bench.methods["rmu"]
    assert spec.objective == "rmu" and spec.hparams == {"preset": "wmdp"}
    over = bench.method_overrides("rmu", spec, model)
    hp = over["objective_kwargs"]
    assert hp == {"preset": "wmdp", "layer": 1, "update_layers": [0, 1]}
    trained = [n for n, _ in model.named_parameters() if re.search(over["trainable"], n)]
    assert trained == ["model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    assert bench.method_overrides("ga", MethodSpec("ga"), model) == {}
    geffect = WmdpBenchmark(WmdpStudyConfig.quick_config(output_dir=str(tmp_path), rmu_preset="geffect"))
    over = geffect.method_overrides("rmu", geffect.methods["rmu"], model)  # every parameter trains, at block 1 of 4
    assert over["objective_kwargs"] == {"preset": "geffect", "layer": 1} and "trainable" not in over


def test_text_examples_are_chunks_with_labels(tiny, tmp_path):
    model, tok = tiny
    bench = MuseBenchmark(MuseStudyConfig.quick_config(output_dir=str(tmp_path), max_length=64))
    items = bench.examples(tok, model, "forget", 3)
    assert len(items) == 3 and all(torch.equal(it["labels"], it["input_ids"]) for it in items)
    assert all(len(it["input_ids"]) <= 64 for it in items)
    assert bench.n_forget_items(tok) == len(bench.unlearning_data(tok).forget) >= 6  # documents cut at 64 tokens
    retain = bench.examples(tok, model, "retain", None)
    assert len(retain) == len(bench.unlearning_data(tok).retain)
    kwargs = bench.run_kwargs(tok, model, SimpleNamespace(name="idk"))
    assert kwargs["datasets"].train.idk_answers  # refusal batches for IdkPO
    assert bench.run_kwargs(tok, model, SimpleNamespace(name="ga"))["datasets"].train.idk_answers is None


def test_muse_retain_model_has_privleak_zero(tiny, tmp_path):
    model, tok = tiny
    bench = MuseBenchmark(MuseStudyConfig.quick_config(output_dir=str(tmp_path)))
    retain = bench.evaluate(model, tok, tmp_path / "eval_retain", role="retain")
    assert retain["privleak"] == 0.0 and retain["privleak/reference"] == "itself"
    other = bench.evaluate(model, tok, tmp_path / "eval_target", tmp_path / "eval_retain", role="target")
    assert other["privleak/reference"] == "retain model" and other["privleak/auc_retain"] == retain["privleak/auc"]
    assert other["privleak"] == pytest.approx(0.0)  # the same model: as private as the reference
    assert (tmp_path / "eval_target" / "summary.json").is_file()


def test_wmdp_evaluate_pools_the_hazard_questions(tiny, tmp_path):
    model, tok = tiny
    bench = WmdpBenchmark(WmdpStudyConfig.quick_config(output_dir=str(tmp_path), eval_subset=0))
    summary = bench.evaluate(model, tok, tmp_path / "eval")
    tables = {s: mc_table(model, tok, load_wmdp_questions("embedded", s, embedded=WMDP_QUICK).to_list(),
                          description=mc_description({"bio": "biology", "cyber": "cybersecurity"}[s]))
              for s in ("bio", "cyber")}
    pooled = pd.concat(tables.values())["acc"].mean()
    assert summary["wmdp/acc"] == pytest.approx(pooled)
    assert summary["wmdp_bio/acc"] == pytest.approx(tables["bio"]["acc"].mean())
    assert bench.chance() == 0.25


# --------------------------------------------------------------------------- gates
def test_muse_gate():
    ok = check_muse({"verbmem_f": 0.95}, {"verbmem_f": 0.2})
    assert ok.passed and "reproduces the forget documents" in ok.text()
    close = check_muse({"verbmem_f": 0.95}, {"verbmem_f": 0.8})
    assert not close.passed and "FAILED" in close.text() and "gap" in close.text()
    assert not check_muse({"verbmem_f": 0.3}, {"verbmem_f": 0.0}).passed
    alone = check_muse({"verbmem_f": 0.9}, None)
    assert alone.passed and "No retain model" in alone.text()
    assert set(ok.to_dict()) == {"passed", "checks", "numbers", "text"}


def test_wmdp_gate():
    assert check_wmdp({"wmdp/acc": 0.9}, {"wmdp/acc": 0.3}).passed
    assert not check_wmdp({"wmdp/acc": 0.45}, {"wmdp/acc": 0.2}).passed  # too close to chance
    assert not check_wmdp({"wmdp/acc": 0.9}, {"wmdp/acc": 0.8}).passed   # the retain model knows it too
    assert not check_wmdp({}, None).passed  # no number: never passes
    assert check_wmdp({"wmdp/acc": 0.6}, None, chance=0.5, margin=0.1).passed


# --------------------------------------------------------------------------- trajectories and frames
def test_step_eval_callback_writes_history(tmp_path):
    calls = []

    def evaluate(model, tok, out_dir):
        calls.append((model.training, out_dir.name))
        return {"verbmem_f": 0.5, "knowmem_r": 0.4, "privleak": -20.0, "sets": {"x": 1}, "privleak/reference": "r"}

    model = torch.nn.Linear(2, 2).train()
    cb = StepEvalCallback(evaluate, None, [2, 4])
    args = SimpleNamespace(output_dir=str(tmp_path))
    for step in range(1, 6):
        cb.on_step_end(args, SimpleNamespace(global_step=step, epoch=step / 5), None, model=model)
    cb.on_step_end(args, SimpleNamespace(global_step=4, epoch=0.8), None, model=model)  # repeated step: once
    assert calls == [(False, "step-2"), (False, "step-4")] and model.training
    lines = [json.loads(l) for l in (tmp_path / "eval" / "history.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [2, 4] and "sets" not in lines[0] and lines[0]["privleak"] == -20.0
    (tmp_path / "eval" / "summary.json").write_text(json.dumps({"verbmem_f": 0.1, "knowmem_r": 0.3, "privleak": -5.0}))
    frame = trajectory_frame(tmp_path, "ga", 6, {"verbmem_f": 0.9, "knowmem_r": 0.5, "privleak": -100.0},
                             MuseBenchmark.trajectory_keys)
    assert list(frame["step"]) == [0, 2, 4, 6] and list(frame["verbmem_f"]) == [0.9, 0.5, 0.5, 0.1]
    assert "forget_es" not in frame.columns and frame["knowmem_f"].isna().all()


def test_collect_frames_uses_the_benchmark_keys(tmp_path):
    for name, summary in (("target", {"verbmem_f": 0.9, "knowmem_r": 0.6, "privleak": -100.0}),
                          ("retain", {"verbmem_f": 0.2, "knowmem_r": 0.5, "privleak": 0.0})):
        folder = tmp_path / "references" / f"eval_{name}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps(summary))
    frames = collect_frames(tmp_path, [], "done.json", summary_keys=MuseBenchmark.summary_keys,
                            trajectory_keys=MuseBenchmark.trajectory_keys, reference_fill={})
    metrics = frames["metrics"].set_index("method")
    assert metrics.loc["target", "verbmem_f"] == 0.9 and metrics.loc["retain", "privleak"] == 0.0
    assert "forget_es" not in metrics.columns and metrics["reference"].all()
    tofu = collect_frames(tmp_path, [], "done.json")  # TOFU's keys: the retain model's forget quality is filled
    assert tofu["metrics"].set_index("method").loc["retain", "forget_quality"] == 1.0


# --------------------------------------------------------------------------- findings and plots on a benchmark's axes
def _trajectory(forget: str, retain: str) -> pd.DataFrame:
    rows = []
    for method, slope in (("satimp", 0.2), ("simsat", 0.5), ("simimp", 0.8)):
        for step in range(0, 5):
            rows.append({"method": method, "step": step, forget: 0.9 - 0.2 * step, retain: 0.6 - slope * 0.1 * step})
    return pd.DataFrame(rows)


def test_matched_utility_reads_the_benchmark_axes():
    labels = MuseBenchmark.axes.finding_labels()
    muse = matched_utility({"trajectory": _trajectory("verbmem_f", "knowmem_r")}, budget=0.9, **labels)[0]
    tofu = matched_utility({"trajectory": _trajectory("forget_es", "retain_es")}, budget=0.9)[0]
    assert muse.data == tofu.data  # the same numbers on other columns
    assert muse.text.startswith("VerbMem where KnowMem on retain falls to 90%")
    assert tofu.text.startswith("Forget ES where retain ES falls to 90%")
    findings = compute_findings({"trajectory": _trajectory("verbmem_f", "knowmem_r")}, **labels)
    order = next(f for f in findings if f.key == "satimp_ordering")
    assert order.verdict == "supports" and "at matched KnowMem on retain" in order.claim
    only = compute_findings({"trajectory": _trajectory("verbmem_f", "knowmem_r")}, keys=("matched_utility",), **labels)
    assert [f.key for f in only] == ["matched_utility"]


def test_plots_on_a_benchmark_axes():
    metrics = pd.DataFrame({"method": ["target", "retain", "ga"], "reference": [True, True, False],
                            "verbmem_f": [0.9, 0.2, 0.3], "knowmem_f": [0.6, 0.0, 0.1], "knowmem_r": [0.6, 0.5, 0.2],
                            "privleak": [-100.0, 0.0, -30.0]})
    fig = tradeoff.plot(metrics, **MuseBenchmark.tradeoff)
    assert len(fig.data) == 3 * 3 and fig.layout.xaxis3.title.text.startswith("PrivLeak")
    traj = _trajectory("wmdp", "mmlu").assign(wmdp_bio=0.5)
    fig = trajectory.plot(traj, budget=0.8, **WmdpBenchmark.axes.trajectory_kwargs())
    assert fig.layout.xaxis.title.text.startswith("hazard accuracy") and len(fig.data) == 6
    assert any("80% of the target's utility accuracy" in (a.text or "") for a in fig.layout.annotations)
    assert Axes().trajectory_kwargs()["x"] == "forget_es"
