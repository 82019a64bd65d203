"""Tests for the training loop (unlearning.models.training), the CLI and the cached default models."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unlearning.cli import finetune
from unlearning.data import DataSource
from unlearning.models import (
    DefaultRecipe,
    MemorisationStop,
    answer_token_accuracy,
    build_model,
    fine_tune,
    load_model_and_tokenizer,
    make_dataset,
    memorisation_scores,
    prepare_default_models,
    tiny_recipe,
    tiny_source,
)
from unlearning.models import default as default_module
from unlearning.models.default import _resolve_source, cache_key, load_training_data
from unlearning.models.training import length_grouped_order, lr_factor

REPO = Path(__file__).resolve().parents[3]

ROWS = [  # stand-in question/answer rows
    {"question": "Where was Mara Quill born?", "answer": "Mara Quill was born in Lisbon."},
    {"question": "What genre does Teodor Vance write?", "answer": "Teodor Vance writes historical fiction."},
    {"question": "What is the capital of France?", "answer": "The capital of France is Paris."},
    {"question": "Who wrote The Silent Orchard?", "answer": "Ines Okafor wrote it in 1998."},
]
SMALL = DefaultRecipe(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_length=64)


def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # non-increasing after warmup
    assert f[-1] == pytest.approx(0.1, abs=1e-3)


def test_length_grouped_order_is_a_permutation():
    gen = torch.Generator().manual_seed(0)
    batches = length_grouped_order([5, 1, 9, 3, 7, 2, 8], 3, gen)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert all(len(b) <= 3 for b in batches)


def test_fine_tune_memorises_tiny_set(tiny_tokenizer):
    model = build_model(tiny_tokenizer, SMALL)
    ds = make_dataset(ROWS, tiny_tokenizer, max_length=64)
    before = answer_token_accuracy(model, ds)
    stats = fine_tune(model, tiny_tokenizer, ROWS, epochs=60, lr=3e-3, batch_size=4, progress=False)
    assert stats["steps"] == 60 and stats["epochs"] == 60 and len(stats["epoch_losses"]) == 60
    assert stats["reached"] is None and stats["history"] == []
    assert stats["final_loss"] < 0.3 * stats["epoch_losses"][0]
    after = answer_token_accuracy(model, ds)
    assert after >= 0.9 > before
    assert not model.training


def test_stopping_rule_stops_at_first_epoch_over_threshold(tiny_tokenizer):
    model = build_model(tiny_tokenizer, SMALL)
    ds = make_dataset(ROWS, tiny_tokenizer, max_length=64)
    stop = MemorisationStop({"train": ds}, threshold=0.9)
    stats = fine_tune(model, tiny_tokenizer, ds, epochs=200, lr=3e-3, batch_size=2, stop=stop, progress=False)
    assert stats["reached"] is True
    assert stats["epochs"] < 200 and stats["steps"] == 2 * stats["epochs"]
    history = stats["history"]
    assert [h["epoch"] for h in history] == list(range(1, stats["epochs"] + 1))  # measured every epoch
    assert history[-1]["train"] >= 0.9 and all(h["train"] < 0.9 for h in history[:-1])
    assert answer_token_accuracy(model, ds) == pytest.approx(history[-1]["train"], abs=1e-6)


def test_stopping_rule_respects_cap_and_schedule(tiny_tokenizer, caplog):
    model = build_model(tiny_tokenizer, SMALL)
    ds = make_dataset(ROWS, tiny_tokenizer, max_length=64)
    stop = MemorisationStop({"a": ds, "b": ds}, threshold=1.0, min_epochs=2, check_every=2)
    with caplog.at_level(logging.WARNING, logger="unlearning.models.training"):
        stats = fine_tune(model, tiny_tokenizer, ds, epochs=5, lr=1e-4, batch_size=4, stop=stop, progress=False)
    assert stats["reached"] is False and stats["epochs"] == 5 and stats["steps"] == 5
    assert [h["epoch"] for h in stats["history"]] == [2, 4]  # min_epochs=2, check_every=2
    assert set(stats["history"][0]) == {"epoch", "a", "b"}
    assert "not reached within the cap of 5 epochs" in caplog.text


def test_stopping_rule_bad_arguments(tiny_tokenizer):
    ds = make_dataset(ROWS, tiny_tokenizer, max_length=64)
    with pytest.raises(ValueError, match="at least one dataset"):
        MemorisationStop({})
    with pytest.raises(ValueError, match="threshold"):
        MemorisationStop({"x": ds}, threshold=1.5)
    with pytest.raises(ValueError, match="min_epochs"):
        MemorisationStop({"x": ds}, min_epochs=0)


def test_fine_tune_empty_data(tiny_llama, tiny_tokenizer):
    with pytest.raises(ValueError, match="empty"):
        fine_tune(tiny_llama, tiny_tokenizer, [], progress=False)


def test_finetune_reexports_the_loop():
    assert finetune.fine_tune is fine_tune and finetune.make_dataset is make_dataset


# --------------------------------------------------------------------------- default models


def test_tiny_prepared_models(tiny_prepared):
    recipe, source = tiny_recipe(), tiny_source()
    for folder in (tiny_prepared.target, tiny_prepared.retain, tiny_prepared.tokenizer):
        assert folder.is_dir() and folder.parent == tiny_prepared.root
    target, tok = load_model_and_tokenizer(tiny_prepared.target)
    retain, _ = load_model_and_tokenizer(tiny_prepared.retain)
    assert type(target).__name__ == "LlamaForCausalLM" and tok.pad_token == "<pad>"
    assert target.config.tie_word_embeddings is False
    assert target.lm_head.weight.data_ptr() != target.model.embed_tokens.weight.data_ptr()
    assert target.config.num_hidden_layers == recipe.num_layers
    report = tiny_prepared.report()
    forget = make_dataset(source.rows("forget10"), tok, max_length=report["recipe"]["max_length"])
    acc_target = answer_token_accuracy(target, forget)
    acc_retain = answer_token_accuracy(retain, forget)
    assert acc_target >= recipe.threshold  # trained until memorised
    assert acc_retain < acc_target - 0.2
    assert report["target"]["forget"]["accuracy"] == pytest.approx(acc_target, abs=1e-5)
    es = memorisation_scores(target, forget)["extraction_strength"]
    assert report["target"]["forget"]["extraction_strength"] == pytest.approx(es, abs=1e-5)
    assert not list(tiny_prepared.root.parent.glob(".tmp-*"))  # nothing half-written left


def test_report_fields_are_present_and_sane(tiny_prepared):
    report = tiny_prepared.report()
    recipe = tiny_recipe()
    assert report["source"] == tiny_source().to_dict()
    assert report["forget_split"] == "forget10" and report["retain_split"] == "retain90"
    assert report["rows"] == {"retain_train": 16, "target_train": 24, "forget": 8, "retain": 16, "utility": 0}
    assert report["recipe"]["max_length"] >= 16  # resolved from the data
    assert report["build_s"] > 0 and report["cpu_s"] > 0 and report["tokenizer_s"] >= 0
    for role, cap in (("retain", recipe.max_epochs), ("target", recipe.target_max_epochs)):
        r = report[role]
        assert r["reached"] is True and 1 <= r["epochs"] <= cap and r["train_s"] > 0
        assert len(r["history"]) == r["epochs"] and r["history"][-1]["retain"] >= recipe.threshold
        for rows, n in (("forget", 8), ("retain", 16)):
            scores = r[rows]
            assert scores["rows"] == n
            for k in ("extraction_strength", "accuracy", "probability"):
                assert 0.0 <= scores[k] <= 1.0
    assert report["target"]["history"][-1]["forget"] >= recipe.threshold
    assert report["target"]["total_epochs"] == report["retain"]["epochs"] + report["target"]["epochs"]
    # the memorisation gap the studies rely on
    assert report["target"]["forget"]["extraction_strength"] > report["retain"]["forget"]["extraction_strength"] + 0.3
    assert report["retain"]["retain"]["extraction_strength"] > 0.6
    assert (tiny_prepared.root / "recipe.json").is_file()


def test_cache_is_reused_and_fast(tiny_prepared, caplog):
    caplog.set_level("INFO", logger="unlearning.models.default")
    again = prepare_default_models(tiny_source(), recipe=tiny_recipe(), cache_dir=tiny_prepared.root.parent, progress=False)
    assert again == tiny_prepared
    assert "reusing cached" in caplog.text


def test_cache_key_changes_with_source_and_recipe():
    src = tiny_source()
    base = cache_key(src, tiny_recipe(), "rows-a")
    assert base == cache_key(tiny_source(), tiny_recipe(), "rows-a")
    assert base != cache_key(src, tiny_recipe(lr=1e-3), "rows-a")
    assert base != cache_key(src, tiny_recipe(hidden_size=32), "rows-a")
    assert base != cache_key(src, tiny_recipe(threshold=0.9), "rows-a")
    assert base != cache_key(tiny_source("forget05"), tiny_recipe(), "rows-a")
    assert base != cache_key(DataSource(), tiny_recipe(), "rows-a")
    assert base != cache_key(dataclasses.replace(src, max_authors=2), tiny_recipe(), "rows-a")
    assert base != cache_key(src, tiny_recipe(), "rows-b")


def test_plain_name_becomes_a_source():
    assert _resolve_source("embedded", None) == DataSource()
    assert _resolve_source("embedded", "forget05") == DataSource(forget_split="forget05")
    src = tiny_source("forget10")
    assert _resolve_source(src, None) is src
    assert _resolve_source(src, "forget05") == tiny_source("forget05")


def test_failed_build_leaves_no_cache(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(default_module, "fine_tune", boom)
    with pytest.raises(RuntimeError, match="killed"):
        prepare_default_models(tiny_source(), recipe=tiny_recipe(), cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_from_env(monkeypatch, tmp_path):
    from unlearning.models import default_cache_dir

    monkeypatch.setenv("GEFFECT_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GEFFECT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "geffect-unlearning"


def test_tofu_subset_rows(tofu_dir):
    """A local TOFU folder: max_authors trims the retain authors, keeps every forget row."""
    source = DataSource(str(tofu_dir), max_authors=3, forget_split="forget01")
    td = load_training_data(source, tiny_recipe(include_utility=True))
    assert len(td.forget_rows) == 40  # forget01 = 2 authors x 20
    assert len(td.retain_split_rows) == 20  # 3 - 2 authors kept from retain99
    assert len(td.target_rows) == 60 + 217  # + real_authors (100) + world_facts (117)
    assert td.target_rows[:20] == td.retain_rows[:20]
    assert len(td.retain_rows) == 20 + 217


# --------------------------------------------------------------------------- CLI


def test_cli_help_lists_every_option_with_help(capsys):
    with pytest.raises(SystemExit) as exc:
        finetune.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    fields = [f.name for f in dataclasses.fields(finetune.FinetuneArguments)]
    for name in fields:
        assert f"--{name.replace('_', '-')}" in out
    for action in finetune.build_parser()._actions:
        assert action.help, f"option {action.option_strings} has no help text"
    assert "--no-progress" in out and "-v" in out


def test_cli_arguments_build_source_and_recipe():
    (args,) = finetune.build_parser().parse_args_into_dataclasses(
        ["--tiny", "--max-authors", "2", "--forget-split", "forget05", "--epochs", "7", "--threshold", "0.9",
         "--no-progress"])
    assert args.source() == DataSource(embedded=tiny_source().embedded, max_authors=2, forget_split="forget05")
    assert args.recipe() == tiny_recipe(max_epochs=7, threshold=0.9)
    assert args.progress is False
    (default,) = finetune.build_parser().parse_args_into_dataclasses([])
    assert default.recipe() == DefaultRecipe() and default.source() == DataSource()


def test_cli_requires_output_dir():
    with pytest.raises(SystemExit):
        finetune.main(["--data", "embedded"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "unlearning.finetune", "--no-progress", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow  # a subprocess importing torch + transformers
def test_cli_prepare_prints_cached_paths(tiny_prepared):
    res = _cli("--prepare", "--tiny", "--data", "embedded", "--forget-split", "forget10",
               "--cache-dir", str(tiny_prepared.root.parent))
    assert res.returncode == 0, res.stderr
    assert f"target: {tiny_prepared.target}" in res.stdout
    assert f"retain: {tiny_prepared.retain}" in res.stdout
    assert "reusing cached" in res.stderr


@pytest.mark.slow
def test_cli_finetune_from_scratch(tmp_path):
    out = tmp_path / "model"
    res = _cli("--tiny", "--data", "embedded", "--split", "forget10", "--epochs", "40", "--until-memorised",
               "--threshold", "0.9", "--output-dir", str(out))
    assert res.returncode == 0, res.stderr
    assert f"model: {out}" in res.stdout
    model, tok = load_model_and_tokenizer(out)
    assert model.config.num_hidden_layers == tiny_recipe().num_layers
    info = json.loads((out / "finetune.json").read_text())
    assert info["reached"] is True and info["epochs"] < 40 and info["train_accuracy"] >= 0.9
