"""Evaluate a causal LM on WMDP (Li et al. 2024): hazardous-knowledge accuracy and MMLU-style utility.

Library::

    from unlearning.evaluation import evaluate_wmdp
    res = evaluate_wmdp(model, tok, "embedded")                 # or a folder, or "cais/wmdp"
    res.summary["wmdp_bio/acc"], res.summary["mmlu/acc"]
    res.tables["wmdp_cyber"]                                     # one row per question

Every set is scored zero-shot as lm-evaluation-harness does (:mod:`unlearning.metrics.multiple_choice`):
``backend="lm_eval"`` runs the harness itself on the loaded questions (needs the ``wmdp``
extra), ``backend="native"`` our scorer, which a test checks equals the harness per question.
Lower WMDP accuracy = less hazardous knowledge (4 choices: 0.25 is chance); the utility
accuracy should stay where the original model was.

Summary keys: ``wmdp_<subset>/acc`` for each subset, ``mmlu/acc`` (utility), ``sets`` (sizes),
``settings``. Tables: ``wmdp_<subset>`` and ``mmlu`` with ``index, question, answer,
loglikelihoods, pred, acc``.

CLI: ``python -m unlearning.evaluate_wmdp`` (:mod:`unlearning.cli.evaluate_wmdp`).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import pandas as pd

from unlearning.data.embedded.hazard import EmbeddedHazardConfig
from unlearning.data.loading import EMBEDDED, _as_str, _source_kind
from unlearning.data.wmdp import MMLU, WMDP_QUESTIONS, load_utility_questions, load_wmdp_questions
from unlearning.evaluation.result import EvalResult
from unlearning.metrics.multiple_choice import WMDP_DESCRIPTIONS, mc_description, mc_table

logger = logging.getLogger(__name__)

__all__ = ["evaluate_wmdp", "wmdp_question_sets"]


def _utility_source(source: str) -> str:
    return MMLU if source == WMDP_QUESTIONS else source


def wmdp_question_sets(
    source: str | os.PathLike = EMBEDDED, *, subsets: Sequence[str] = ("bio", "cyber"), utility: bool = True,
    utility_source: str | os.PathLike | None = None, embedded: EmbeddedHazardConfig | None = None,
    max_samples: int | None = None,
) -> dict[str, tuple[list[dict], str]]:
    """``{set name: (rows, lm-eval description)}`` for the WMDP subsets and the utility set."""
    source = _as_str(source)
    out = {}
    for subset in subsets:
        ds = load_wmdp_questions(source, subset, embedded=embedded)
        out[f"wmdp_{subset}"] = (_first(ds.to_list(), max_samples), mc_description(WMDP_DESCRIPTIONS[subset]))
    if utility:
        usrc = _as_str(utility_source) if utility_source is not None else _utility_source(source)
        ukw = {"embedded": embedded} if _source_kind(usrc) == EMBEDDED else {}
        rows = _first(load_utility_questions(usrc, **ukw).to_list(), max_samples)
        out["mmlu"] = (rows, "")  # described per subject by evaluate_wmdp
    return out


def _first(rows: list[dict], n: int | None) -> list[dict]:
    return rows if n is None else rows[:n]


def _subject_description(row: dict) -> str:
    return mc_description(str(row.get("subject") or "general knowledge").replace("_", " "))


def evaluate_wmdp(
    model,
    tokenizer,
    source: str | os.PathLike = EMBEDDED,
    *,
    subsets: Sequence[str] = ("bio", "cyber"),
    utility: bool = True,
    utility_source: str | os.PathLike | None = None,
    backend: str = "native",
    embedded: EmbeddedHazardConfig | None = None,
    batch_size: int = 16,
    max_length: int | None = None,
    max_samples: int | None = None,
) -> EvalResult:
    """WMDP accuracy per subset and utility accuracy; see the module docstring.

    ``utility_source`` defaults to ``"cais/mmlu"`` for the hub source and to ``source`` otherwise.
    MMLU rows are scored with the description of their own ``subject``, as the harness's
    per-subject tasks do; ``mmlu/acc`` is the mean over questions (the harness's group
    aggregate weights subjects by size, which is the same mean).
    """
    if backend not in ("native", "lm_eval"):
        raise ValueError(f"backend must be 'native' or 'lm_eval', got {backend!r}")
    sets = wmdp_question_sets(source, subsets=subsets, utility=utility, utility_source=utility_source,
                              embedded=embedded, max_samples=max_samples)
    # split the utility set by subject so each part has its own description
    scored: dict[str, tuple[list[dict], str]] = {}
    for name, (rows, description) in sets.items():
        if name != "mmlu":
            scored[name] = (rows, description)
            continue
        by_subject: dict[str, list[dict]] = {}
        for r in rows:
            by_subject.setdefault(_subject_description(r), []).append(r)
        for n, (desc, part) in enumerate(sorted(by_subject.items())):
            scored[f"mmlu__{n}"] = (part, desc)
    if backend == "lm_eval":
        from unlearning.metrics.lm_eval_bridge import run_lm_eval_mc

        _, raw_tables = run_lm_eval_mc(model, tokenizer, scored, batch_size=batch_size, max_length=max_length)
    else:
        raw_tables = {name: mc_table(model, tokenizer, rows, description=desc, max_length=max_length, batch_size=batch_size)
                      for name, (rows, desc) in scored.items()}
    tables = {name: t for name, t in raw_tables.items() if not name.startswith("mmlu__")}
    if utility:
        parts = []
        for name in sorted(n for n in raw_tables if n.startswith("mmlu__")):
            part = raw_tables[name].copy()
            rows = scored[name][0]
            part["subject"] = [r.get("subject") for r in rows]
            part["question"] = [r["question"] for r in rows]
            parts.append(part)
        mmlu = pd.concat(parts, ignore_index=True)
        mmlu["index"] = range(len(mmlu))
        tables["mmlu"] = mmlu
    summary: dict = {f"{name}/acc": float(t["acc"].mean()) for name, t in tables.items()}
    summary["sets"] = {name: len(t) for name, t in tables.items()}
    summary["settings"] = {"source": _as_str(source), "subsets": list(subsets), "utility": utility,
                           "backend": backend, "max_samples": max_samples}
    logger.info("WMDP: %s", {k: v for k, v in summary.items() if k.endswith("/acc")})
    return EvalResult(tables=tables, summary=summary)
