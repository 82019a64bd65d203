"""Run lm-evaluation-harness multiple-choice tasks over local data, offline, on an in-memory model.

``pip install 'geffect-unlearning[wmdp]'`` (``lm-eval >= 0.4``). Each question set is written
to a JSON-lines file in a temporary folder and described by a task configuration identical to
the harness's own ``wmdp_*`` / ``mmlu_*`` templates except for the data source
(``dataset_path: json`` with ``data_files``): same prompt, choices " A".." D", target
``answer``, metric ``acc``, zero-shot. The model is wrapped in ``lm_eval.models.huggingface.HFLM``
(our model and tokenizer objects, no download) and scored with ``lm_eval.simple_evaluate``.

To evaluate the *published* tasks instead (needs the hub), pass their names, e.g.
``run_lm_eval_tasks(model, tokenizer, ["wmdp_bio", "mmlu"])``.
"""
from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from unlearning.metrics.generation import model_max_length

logger = logging.getLogger(__name__)

__all__ = ["MC_TEMPLATE", "mc_task_config", "run_lm_eval_mc", "run_lm_eval_tasks"]

#: lm-eval's ``doc_to_text`` of the wmdp and mmlu tasks.
MC_TEMPLATE = "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"


def _require_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "lm-evaluation-harness is not installed; pip install 'geffect-unlearning[wmdp]' (lm-eval>=0.4), "
            "or use backend='native' (our scorer, tested equal to lm-eval)"
        ) from exc


def mc_task_config(name: str, data_file: str | Path, description: str, cache_dir: str | Path | None = None) -> dict:
    """A zero-shot multiple-choice task over a local JSON-lines file (question, choices, answer)."""
    kwargs: dict[str, Any] = {"data_files": {"test": str(data_file)}}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": kwargs,
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": MC_TEMPLATE,
        "doc_to_choice": ["A", "B", "C", "D"],
        "doc_to_target": "answer",
        "description": description,
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1},
    }


def _hflm(model, tokenizer, batch_size: int, max_length: int | None):
    from lm_eval.models.huggingface import HFLM

    device = str(next(model.parameters()).device)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device,
                max_length=max_length or model_max_length(model))


def _sample_table(samples: list[dict]) -> pd.DataFrame:
    rows = []
    for s in sorted(samples, key=lambda s: s["doc_id"]):
        lls = [float(r[0]) for r in s["filtered_resps"]]
        rows.append({"index": int(s["doc_id"]), "question": s["doc"].get("question"), "answer": int(s["target"]),
                     "loglikelihoods": lls, "pred": max(range(len(lls)), key=lambda i: (lls[i], -i)),
                     "acc": float(s["acc"])})
    return pd.DataFrame(rows)


def run_lm_eval_mc(
    model, tokenizer, question_sets: Mapping[str, tuple[Sequence[Mapping], str]], *,
    batch_size: int = 16, max_length: int | None = None,
) -> tuple[dict[str, float], dict[str, pd.DataFrame]]:
    """Score local question sets with lm-eval: ``{name: (rows, description)}`` -> (acc per name, tables).

    Every set must have four choices per question (the harness template shows A-D).
    """
    _require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.api.task import ConfigurableTask

    for name, (rows, _) in question_sets.items():
        bad = [i for i, r in enumerate(rows) if len(r["choices"]) != 4]
        if bad:
            raise ValueError(f"question set {name!r}: rows {bad[:5]} do not have 4 choices (the lm-eval template needs A-D)")
    accs, tables = {}, {}
    with tempfile.TemporaryDirectory(prefix="lm-eval-") as tmp:
        tasks = []
        for name, (rows, description) in question_sets.items():
            path = Path(tmp) / f"{name}.jsonl"
            with path.open("w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps({"question": r["question"], "choices": list(r["choices"]),
                                        "answer": int(r["answer"])}) + "\n")
            tasks.append(ConfigurableTask(config=mc_task_config(name, path, description, cache_dir=Path(tmp) / "cache")))
        lm = _hflm(model, tokenizer, batch_size, max_length)
        was_training = model.training
        model.eval()
        try:
            res = simple_evaluate(model=lm, tasks=tasks, log_samples=True, bootstrap_iters=0)
        finally:
            model.train(was_training)
    for name in question_sets:
        accs[name] = float(res["results"][name]["acc,none"])
        tables[name] = _sample_table(res["samples"][name])
    return accs, tables


def run_lm_eval_tasks(model, tokenizer, tasks: Sequence[str], *, batch_size: int = 16, **kwargs) -> dict:
    """The harness's own registered tasks by name (``wmdp_bio``, ``mmlu``, ...): the raw results dict.

    These download their data from the hub on first use.
    """
    _require_lm_eval()
    from lm_eval import simple_evaluate

    return simple_evaluate(model=_hflm(model, tokenizer, batch_size, None), tasks=list(tasks), **kwargs)
