"""StepEvalCallback: any evaluation function at chosen steps, with the folder layout and history lines of EvalCallback."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from unlearning.callbacks import StepEvalCallback, numeric_summary
from unlearning.runs import RunFolder, read_jsonl


def test_schedule_mode_and_history(tiny_llama, tiny_tokenizer, tmp_path):
    seen = []

    def evaluate(model, tokenizer, out_dir):
        seen.append((out_dir.name, model.training, torch.is_grad_enabled(), tokenizer is tiny_tokenizer))
        out_dir.mkdir(parents=True)
        (out_dir / "mine.json").write_text("{}")
        return {"score": 0.25 * len(seen), "name": "x", "nested": {"a": 1}, "flag": True}

    cb = StepEvalCallback(evaluate, tiny_tokenizer, at_steps=(0, 3), every_steps=2, log_keys=("score",))
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=0, epoch=0.0, log_history=[])
    tiny_llama.train()
    cb.on_train_begin(args, state, None, model=tiny_llama)
    for step in (1, 2, 3, 4):
        state.global_step, state.epoch = step, step / 4
        cb.on_step_end(args, state, None, model=tiny_llama)
        cb.on_epoch_end(args, state, None, model=tiny_llama)  # per_epoch is off
    tiny_llama.eval()
    assert [s[0] for s in seen] == ["step-0", "step-2", "step-3", "step-4"]
    assert all(not training and not grad and same_tok for _, training, grad, same_tok in seen)
    folder = RunFolder(tmp_path)
    assert (folder.eval_step_dir(3) / "mine.json").is_file()
    rows = read_jsonl(folder.eval_history)
    assert rows == cb.history and [r["step"] for r in rows] == [0, 2, 3, 4]
    assert rows[1] == {"score": 0.5, "name": "x", "step": 2, "epoch": 0.5}  # numeric_summary: no dict, no bool
    assert [h["eval/score"] for h in state.log_history] == [0.25, 0.5, 0.75, 1.0]
    assert numeric_summary({"a": 1, "b": [1], "c": False, "d": "s"}) == {"a": 1, "d": "s"}


def test_step_evaluated_once_and_clear_errors(tiny_llama, tmp_path):
    calls = []
    cb = StepEvalCallback(lambda m, t, d: calls.append(d) or {"v": 1.0}, object(), every_steps=1, per_epoch=True)
    args, state = SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=1, epoch=1.0, log_history=[])
    cb.on_step_end(args, state, None, model=tiny_llama)
    cb.on_epoch_end(args, state, None, model=tiny_llama)  # the same step: not again
    assert len(calls) == 1
    with pytest.raises(ValueError, match="every_steps"):
        StepEvalCallback(lambda *a: {}, every_steps=0)
    state.global_step = 2
    with pytest.raises(ValueError, match="tokenizer"):
        StepEvalCallback(lambda *a: {}, every_steps=1).on_step_end(args, state, None, model=tiny_llama)
    with pytest.raises(NotImplementedError, match="evaluate="):
        StepEvalCallback(None, object(), every_steps=1).on_step_end(args, state, None, model=tiny_llama)
    other = SimpleNamespace(output_dir=str(tmp_path / "rank1"), process_index=1)
    StepEvalCallback(lambda m, t, d: {"v": 1.0}, object(), every_steps=1).on_step_end(other, state, None,
                                                                                        model=tiny_llama)
    assert not (tmp_path / "rank1").exists()  # only the main process writes
    assert json.loads(RunFolder(tmp_path).eval_history.read_text())["v"] == 1.0
