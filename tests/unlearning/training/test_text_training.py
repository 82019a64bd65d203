"""Unlearning on raw text: run_unlearning(datasets=), G-effects on text probes, prepare_text_models."""
from __future__ import annotations

import json

import pytest
import torch

from geffect import GEffectTracker
from geffect.testing import random_direction
from unlearning.training import UnlearningArguments
from unlearning.data import build_text_unlearning_data, load_idk_answers, muse_texts, probe_batches
from unlearning.models import DefaultRecipe, build_model, prepare_text_models, train_tokenizer
from unlearning.training import run_unlearning

FORGET = muse_texts("embedded", "forget")[:6]
RETAIN = muse_texts("embedded", "retain1")[:6]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(FORGET + RETAIN, vocab_size=300)


def _model(tok, dtype=torch.float32):
    recipe = DefaultRecipe(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=128, seed=0)
    return build_model(tok, recipe).to(dtype)


def test_geffect_of_a_text_probe_is_the_mean_token_nll_gradient(tok, tmp_path):
    """The tracked G-effect on a chunk equals <grad of its mean next-token NLL, d> (float64 loop reference)."""
    model = _model(tok, torch.float64).eval()
    data = build_text_unlearning_data(FORGET, RETAIN, tok, max_length=48, packing="document")
    probes = probe_batches({"forget": data.forget, "retain": data.retain}, size=3, pad_token_id=tok.pad_token_id)
    assert (probes["forget"]["labels"] == probes["forget"]["input_ids"]).sum() > 0
    direction = {n: t.double() for n, t in random_direction(model, seed=3).items()}
    res = GEffectTracker(tmp_path, {"forget": probes["forget"]}).track(1, model, direction)
    tracked = res["forget"].matrix.double().sum(1)  # (3,) over parameter groups
    params = dict(model.named_parameters())
    for i in range(3):
        ids = torch.tensor(data.forget.chunks[i])  # the unpadded chunk, BOS first
        logits = model(input_ids=ids[None]).logits[0]  # (T, V)
        nll = [-torch.log_softmax(logits[t - 1], -1)[ids[t]] for t in range(1, len(ids))]  # column 0 unscored
        risk = torch.stack(nll).mean()
        grads = torch.autograd.grad(risk, list(params.values()), allow_unused=True)
        expect = sum((g * direction[n]).sum() for n, g in zip(params, grads) if g is not None and n in direction)
        assert abs(float(tracked[i]) - float(expect)) <= 1e-8 * max(1.0, abs(float(expect))), i


def _args(tmp_path, method="ga", **kw):
    kw = {"track_geffect": True, "geffect_probe_size": 2, "log_token_weights": True, **kw}
    return UnlearningArguments(output_dir=str(tmp_path), method=method, max_steps=2, per_device_train_batch_size=2,
                               save_strategy="no", use_cpu=True, report_to="none", disable_tqdm=True,
                               learning_rate=1e-3, dataloader_num_workers=0, logging_steps=1, **kw)


def test_run_unlearning_takes_ready_text_datasets(tok, tmp_path):
    data = build_text_unlearning_data(FORGET, RETAIN, tok, max_length=48, packing="document")
    result = run_unlearning(_args(tmp_path), _model(tok), tok, datasets=data)
    rc = json.loads((tmp_path / "run_config.json").read_text())
    assert rc["global_step"] == 2 and rc["n_forget"] == len(data.forget) and rc["n_retain"] == len(data.retain)
    assert rc["data_source"]["kind"] == "text" and rc["data_source"]["forget"]["packing"] == "document"
    assert rc["retain_split"] is None and rc["retain_holdout"] is None
    record = GEffectTracker.load(result.analysis_dir)
    assert record.steps == [1, 2] and set(record.table()["probe"]) == {"forget", "retain"}


def test_run_unlearning_datasets_errors(tok, tmp_path):
    data = build_text_unlearning_data(FORGET, RETAIN, tok, max_length=48)
    model = _model(tok)
    with pytest.raises(ValueError, match="not both"):
        run_unlearning(_args(tmp_path / "a"), model, tok, data="embedded", datasets=data)
    with pytest.raises(ValueError, match="lacks"):
        run_unlearning(_args(tmp_path / "b"), model, tok, datasets=object())
    with pytest.raises(ValueError, match="refusal answers"):
        run_unlearning(_args(tmp_path / "c", method="idk"), model, tok, datasets=data)
    idk = build_text_unlearning_data(FORGET, RETAIN, tok, max_length=48, idk_answers=load_idk_answers("embedded"))
    rc = run_unlearning(_args(tmp_path / "d", method="idk", track_geffect=False, log_token_weights=False), model, tok,
                        datasets=idk).run_config
    assert rc["global_step"] == 2 and rc["data_source"]["idk"] is True


def test_prepare_text_models_builds_once_and_caches(tok, tmp_path, monkeypatch):
    recipe = DefaultRecipe(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                           max_length=64, max_epochs=1, batch_size=4)
    prepared = prepare_text_models("t-1", FORGET + RETAIN, RETAIN, recipe=recipe, chunk_length=64, cache_dir=tmp_path,
                                   progress=False)
    report = prepared.report()
    assert prepared.target.is_dir() and prepared.retain.is_dir() and prepared.root.name.startswith("t-1-")
    assert report["target_chunks"] > report["retain_chunks"] > 0 and report["target_steps"] > 0
    import unlearning.models.text as text_models

    monkeypatch.setattr(text_models, "fine_tune", lambda *a, **k: pytest.fail("the cached models were retrained"))
    again = prepare_text_models("t-1", FORGET + RETAIN, RETAIN, recipe=recipe, chunk_length=64, cache_dir=tmp_path)
    assert again.root == prepared.root
    with pytest.raises(ValueError, match="name must be"):
        prepare_text_models("a/b", FORGET, RETAIN, recipe=recipe, chunk_length=64, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="shorter than chunk_length"):
        prepare_text_models("t-2", FORGET, RETAIN, recipe=recipe, chunk_length=128, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="texts for both"):
        prepare_text_models("t-3", FORGET, [], recipe=recipe, chunk_length=64, cache_dir=tmp_path)
