"""EvalCallback under two gloo processes: shards gathered, identical summaries, only rank 0 writes."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

KW = dict(sets=("forget", "holdout"), subset=5, batch_size=2, generate=False)


def _worker(rank: int, world: int, model_dir: str, out_dir: str, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from unlearning.callbacks import EvalCallback
        from unlearning.models import load_model_and_tokenizer

        model, tok = load_model_and_tokenizer(model_dir)
        cb = EvalCallback(tok, every_steps=1, per_epoch=False, **KW)
        state = SimpleNamespace(global_step=1, epoch=1.0, log_history=[])
        args = SimpleNamespace(output_dir=out_dir, process_index=rank, world_size=world)  # the Trainer's ranks
        cb.on_step_end(args, state, None, model=model.eval())
        Path(out_dir, f"summary-rank{rank}.json").write_text(json.dumps(cb.history[0], default=str))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_gather_the_same_summary_as_one(tiny_llama, tiny_tokenizer, tmp_path):
    from unlearning.callbacks import EvalCallback

    model_dir = tmp_path / "model"
    tiny_llama.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    out = tmp_path / "run"
    out.mkdir()  # rank 1 writes its summary here; only rank 0 creates eval/
    mp.spawn(_worker, args=(2, str(model_dir), str(out), str(tmp_path / "init")), nprocs=2, join=True)
    s0, s1 = (json.loads((out / f"summary-rank{r}.json").read_text()) for r in range(2))
    assert s0 == s1 and s0["world_size"] == 2 and s0["sets"] == {"forget": 5, "holdout": 5}
    assert (out / "eval" / "step-1" / "summary.json").is_file()
    assert len((out / "eval" / "history.jsonl").read_text().splitlines()) == 1  # only rank 0 wrote
    # a single process gives the same numbers
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = EvalCallback(tiny_tokenizer, every_steps=1, per_epoch=False, output_dir=str(tmp_path / "single"), **KW)
        ref = single.evaluate(SimpleNamespace(output_dir=""), SimpleNamespace(global_step=1, epoch=1.0, log_history=[]), tiny_llama)
    finally:
        torch.set_num_threads(n)
    for k in ("forget/truth_ratio", "forget/extraction_strength", "forget/probability", "mia/loss_auc", "mia/min_k_auc"):
        assert s0[k] == pytest.approx(ref[k], rel=1e-4), k
