"""Evaluate a causal LM with the TOFU metric suite, plus extraction strength and MIA.

Library::

    from unlearning.evaluation import TofuEvalConfig, evaluate_model
    result = evaluate_model(model, tokenizer, data="embedded", forget_split="forget10",
                            retain_stats="runs/retain/eval")     # or an official eval_log_forget.json
    result.summary["model_utility"], result.tables["forget"]      # dict, pandas DataFrame
    result.save("runs/satimp/eval")
    config = TofuEvalConfig(data="embedded", subset=100, generate=False)   # the same settings, as one object
    evaluate_model(model, tokenizer, config=config)

The settings (data, split, sets, subset, batch size, generation lengths, ...) are one
:class:`TofuEvalConfig`, validated once and shared by :func:`evaluate_model`,
:func:`compute_tables` and the step-evaluation callback
(:class:`unlearning.callbacks.EvalCallback`). CLI: ``python -m unlearning.evaluate``
(:mod:`unlearning.cli.evaluate`).

Evaluated sets (each skipped with a warning when the data source lacks it):

=============  ==============================  ==================================================
set            split                           metrics
=============  ==============================  ==================================================
forget         ``<forget>_perturbed``          probability, truth ratio (min(R,1/R)), ROUGE-L
                                               recall, ES, EM (+ ES/EM/probability on the
                                               paraphrased question), MIA scores
retain         ``retain_perturbed``            the same; truth ratio as max(0, 1-R)
real_authors   ``real_authors_perturbed``      option-normalised probability, ROUGE-L, truth ratio
world_facts    ``world_facts_perturbed``       the same
holdout        ``holdout<NN>``                 MIA scores (non-member side of the AUC)
=============  ==============================  ==================================================

Output directory: ``summary.json`` (flat ``"<set>/<metric>"`` keys, the evaluated sets and their
sizes, the settings) and ``per_instance/<set>.parquet`` (or ``.jsonl``), one row per item; every
file is written to a temporary name and renamed, so a crash never leaves a half-written file.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from geffect.losses import answer_nll
from unlearning.data import (DataSource, EmbeddedConfig, PromptTemplate, QACollator, QADataset, as_source,
                             get_template, holdout_split_for, perturbed_split_for)
from unlearning.evaluation.result import EvalResult
from unlearning.runs.folder import EVAL_SUMMARY_FILE
from unlearning.metrics import aggregate as agg
from unlearning.metrics.extraction import extraction_strength_from_logits
from unlearning.metrics.generation import generate_answers, prompt_ids_from_batch, rouge_l_recall
from unlearning.metrics.likelihood import (
    exact_memorization_from_logits,
    forward_logits,
    probability_with_options,
    resolve_eos_token_id,
)
from unlearning.metrics.mia import MIA_ATTACKS, mia_auc, mia_scores_from_logits, privleak
from unlearning.metrics.truth_ratio import truth_ratio_from_nll

__all__ = ["ALL_SETS", "EvalResult", "TofuEvalConfig", "compute_tables", "evaluate_model", "load_eval_sets",
           "load_retain_stats", "merge_shards", "summarize"]

logger = logging.getLogger(__name__)

ALL_SETS = ("forget", "retain", "real_authors", "world_facts", "holdout")
OPTION_SETS = ("real_authors", "world_facts")  # probability normalised over the answer options


# ---- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TofuEvalConfig:
    """The settings of one TOFU evaluation (validated once, here).

    Args:
        data: an ``unlearning.data.DataSource`` (its embedded recipe and author subset apply: a
            model built on a non-default embedded benchmark is evaluated on that benchmark) or a
            source name (``"embedded"``, ``"locuslab/TOFU"``, a local TOFU folder).
        forget_split: the forget split (``forget01`` / ``forget05`` / ``forget10``).
        sets: the evaluated sets, a subset of :data:`ALL_SETS`.
        subset: evaluate only the first N items of every set (TOFU's legacy evaluation uses
            300); None: all.
        batch_size: batch size of the teacher-forced passes and of generation.
        max_new_tokens: greedy tokens generated per answer (ROUGE-L).
        max_length: maximum tokens per question + answer.
        generate: generate answers (ROUGE-L); False skips generation.
        template: the prompt template (default: the model's family, else the tokenizer's).
        data_config: an ``EmbeddedConfig`` for a non-default embedded benchmark given by name
            (e.g. models built with ``tiny_recipe()``).
        progress: progress bars.
    """

    data: DataSource | str = "embedded"
    forget_split: str = "forget10"
    sets: Sequence[str] = ALL_SETS
    subset: int | None = None
    batch_size: int = 16
    max_new_tokens: int = 200
    max_length: int = 512
    generate: bool = True
    template: PromptTemplate | None = None
    data_config: EmbeddedConfig | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [s for s in self.sets if s not in ALL_SETS]
        if unknown or not self.sets:
            raise ValueError(f"sets must be a non-empty subset of {ALL_SETS}, got {tuple(self.sets)}")
        for name in ("batch_size", "max_new_tokens", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be >= 1 (or None for every item), got {self.subset}")

    @classmethod
    def resolve(cls, config: TofuEvalConfig | None = None, **settings: Any) -> TofuEvalConfig:
        """``config``, or one built from keyword ``settings`` (fields of this class); not both.

        Settings given as None are left out (the field keeps its default).
        """
        settings = {k: v for k, v in settings.items() if v is not None}
        if config is None:
            return cls(**settings)
        if settings:
            raise ValueError(f"pass config= or the settings {sorted(settings)}, not both; change a config with "
                             "dataclasses.replace(config, ...)")
        return config

    def replace(self, **changes: Any) -> TofuEvalConfig:
        return dataclasses.replace(self, **changes)


# ---- data --------------------------------------------------------------------------------------


def _set_splits(forget_split: str) -> dict[str, str]:
    return {
        "forget": perturbed_split_for(forget_split),
        "retain": "retain_perturbed",
        "real_authors": "real_authors_perturbed",
        "world_facts": "world_facts_perturbed",
        "holdout": holdout_split_for(forget_split),
    }


def load_eval_sets(
    data="embedded", forget_split: str = "forget10", *, sets: Sequence[str] = ALL_SETS, subset: int | None = None,
    data_config=None,
) -> dict[str, tuple[str, list[dict]]]:
    """{set name: (split name, rows)} for the requested sets the source has; ``subset`` keeps the first N rows.

    ``data``: an ``unlearning.data.DataSource`` (its embedded recipe and author subset apply) or a
    source name; ``data_config``: an ``EmbeddedConfig`` for a non-default embedded benchmark
    given by name.
    """
    source = as_source(data, config=data_config)
    splits = _set_splits(forget_split)
    have = set(source.available_splits())
    out = {}
    for name in sets:
        split = splits[name]
        if split not in have:
            logger.warning("data source %r has no split %r: skipping the %s set", data, split, name)
            continue
        out[name] = (split, source.rows(split, limit=subset))
    return out


# ---- per-instance computation -------------------------------------------------------------------


def _batches(tokenizer, template, pairs: list[tuple[str, str]], batch_size: int, max_length: int):
    ds = QADataset([{"question": q, "answer": a} for q, a in pairs], tokenizer, template=template, max_length=max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = QACollator(pad)
    for s in range(0, len(ds), batch_size):
        yield collate([ds[i] for i in range(s, min(s + batch_size, len(ds)))])


@torch.no_grad()
def _teacher_forced(
    model, tokenizer, template, pairs, *, batch_size, max_length, eos_id, extras: bool, mia: bool, prompts: bool = False
) -> dict[str, list]:
    """Mean answer NLL (+ ES, EM, MIA scores, prompt ids) for (question, answer) pairs, in order."""
    out: dict[str, list] = {"nll": []}
    if extras:
        out["es"], out["em"] = [], []
    if mia:
        out.update({a: [] for a in MIA_ATTACKS})
    if prompts:
        out["prompt_ids"] = []
    offset = 0
    for batch in _batches(tokenizer, template, pairs, batch_size, max_length):
        logits = forward_logits(model, batch)  # (B, T, V)
        labels = batch["labels"].to(logits.device)  # (B, T)
        B = labels.shape[0]
        out["nll"] += answer_nll(logits, labels).tolist()
        if extras:
            out["es"] += extraction_strength_from_logits(logits, labels, eos_id).tolist()
            out["em"] += exact_memorization_from_logits(logits, labels, eos_id).tolist()
        if mia:
            texts = [a for _, a in pairs[offset : offset + B]]
            for k, v in mia_scores_from_logits(logits, labels, texts, eos_token_id=eos_id).items():
                out[k] += v.tolist()
        if prompts:
            out["prompt_ids"] += prompt_ids_from_batch(batch)
        offset += B
    return out


def _evaluate_set(
    model, tokenizer, template, name: str, rows: list[dict], indices: list[int], config: TofuEvalConfig, eos_id,
) -> pd.DataFrame:
    """One row per item of ``rows`` with every per-instance metric that applies to set ``name``."""
    generate = config.generate
    kw = dict(batch_size=config.batch_size, max_length=config.max_length, eos_id=eos_id)
    qa = [(r["question"], r["answer"]) for r in rows]
    df = pd.DataFrame({"index": indices, "question": [q for q, _ in qa], "answer": [a for _, a in qa]})
    if not rows:
        return df
    tf = _teacher_forced(model, tokenizer, template, qa, extras=name != "holdout",
                         mia=name in ("forget", "holdout"), prompts=generate and name != "holdout", **kw)
    df["nll"] = tf["nll"]
    if name == "holdout":
        for a in MIA_ATTACKS:
            df[f"mia_{a}"] = tf[a]
        return df
    df["extraction_strength"], df["exact_memorization"] = tf["es"], tf["em"]
    if name == "forget":
        for a in MIA_ATTACKS:
            df[f"mia_{a}"] = tf[a]
    # paraphrased question (TOFU forget/retain perturbed splits carry one)
    if all(r.get("paraphrased_question") for r in rows):
        pq = _teacher_forced(model, tokenizer, template, [(r["paraphrased_question"], r["answer"]) for r in rows],
                             extras=True, mia=False, **kw)
        df["nll_paraphrased_question"] = pq["nll"]
        df["probability_paraphrased_question"] = np.exp(-np.asarray(pq["nll"]))
        df["extraction_strength_paraphrased"] = pq["es"]
        df["exact_memorization_paraphrased"] = pq["em"]
    # truth ratio: paraphrased answer (the answer itself for real authors / world facts) vs perturbed
    perturbed = [r.get("perturbed_answer") for r in rows]
    if all(isinstance(p, (list, tuple)) and len(p) > 0 for p in perturbed):
        K = len(perturbed[0])
        if any(len(p) != K for p in perturbed):
            raise ValueError(f"set {name!r}: items have different numbers of perturbed answers; TOFU uses a fixed K")
        para_key = "paraphrased_answer" if all(r.get("paraphrased_answer") for r in rows) else "answer"
        para = (_teacher_forced(model, tokenizer, template, [(r["question"], r[para_key]) for r in rows],
                                extras=False, mia=False, **kw)["nll"] if para_key != "answer" else tf["nll"])
        pert_pairs = [(r["question"], p) for r in rows for p in r["perturbed_answer"]]
        pert = torch.tensor(_teacher_forced(model, tokenizer, template, pert_pairs, extras=False, mia=False, **kw)["nll"],
                            dtype=torch.float64).view(len(rows), K)  # (N, K)
        para_t = torch.tensor(para, dtype=torch.float64)  # (N,)
        df["nll_paraphrased"] = para
        df["nll_perturbed"] = pert.tolist()
        df["truth_ratio"] = truth_ratio_from_nll(para_t, pert).tolist()
        if name in OPTION_SETS:
            df["probability"] = probability_with_options(torch.tensor(tf["nll"], dtype=torch.float64), pert).tolist()
    if "probability" not in df:
        df["probability"] = np.exp(-df["nll"].to_numpy())
    if generate:
        texts = generate_answers(model, tokenizer, tf["prompt_ids"], max_new_tokens=config.max_new_tokens,
                                 batch_size=config.batch_size, progress=config.progress)
        df["generated"] = texts
        df["rougeL_recall"] = rouge_l_recall(texts, df["answer"].tolist()).tolist()
    return df


def compute_tables(
    model, tokenizer, eval_sets: Mapping[str, tuple[str, list[dict]]], *, config: TofuEvalConfig | None = None,
    shard: tuple[int, int] | None = None, **settings: Any,
) -> dict[str, pd.DataFrame]:
    """Per-instance tables for ``eval_sets``; with ``shard=(rank, world)`` only items rank, rank+world, ...

    The settings that apply (template, batch size, generation, progress) come from ``config``
    or from keyword ``settings`` (fields of :class:`TofuEvalConfig`).
    """
    config = TofuEvalConfig.resolve(config, **settings)
    template = config.template
    if template is None:  # the model's family (phi, llama2-chat) first, else the tokenizer's chat template / plain
        template = get_template(model)
        if template.name == "plain":
            template = get_template(tokenizer)
    eos_id = resolve_eos_token_id(model, tokenizer.eos_token_id)
    was_training = model.training
    model.eval()
    tables = {}
    try:
        for name, (_, rows) in tqdm(list(eval_sets.items()), desc="evaluate", disable=not config.progress):
            idx = list(range(len(rows)))
            if shard is not None:
                rank, world = shard
                idx = idx[rank::world]
            tables[name] = _evaluate_set(model, tokenizer, template, name, [rows[i] for i in idx], idx, config, eos_id)
    finally:
        model.train(was_training)
    return tables


def merge_shards(shards: Sequence[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """Concatenate per-rank tables set by set and restore item order (by the ``index`` column)."""
    names = list(dict.fromkeys(n for s in shards for n in s))
    out = {}
    for n in names:
        parts = [s[n] for s in shards if n in s]
        out[n] = pd.concat(parts, ignore_index=True).sort_values("index", kind="stable").reset_index(drop=True)
    return out


# ---- summary -----------------------------------------------------------------------------------


def summarize(tables: Mapping[str, pd.DataFrame], *, retain_stats=None) -> dict:
    """Set-level numbers from per-instance tables (rules in :mod:`unlearning.metrics.aggregate`)."""
    s: dict = {}
    for name, df in tables.items():
        if name == "holdout" or len(df) == 0:
            continue
        s[f"{name}/probability"] = float(df["probability"].mean())
        for col in ("rougeL_recall", "extraction_strength", "exact_memorization", "probability_paraphrased_question",
                    "extraction_strength_paraphrased", "exact_memorization_paraphrased"):
            if col in df:
                s[f"{name}/{col}"] = float(df[col].mean())
        if "truth_ratio" in df:
            r = df["truth_ratio"].to_numpy()
            s[f"{name}/truth_ratio"] = agg.forget_truth_ratio(r) if name == "forget" else agg.utility_truth_ratio(r)
    retain_ratios, retain_auc = (None, {}) if retain_stats is None else load_retain_stats(retain_stats)
    if "forget" in tables and "holdout" in tables and len(tables["forget"]) and len(tables["holdout"]):
        for a in MIA_ATTACKS:
            auc = mia_auc(tables["forget"][f"mia_{a}"], tables["holdout"][f"mia_{a}"])
            s[f"mia/{a}_auc"] = auc
            s[f"mia/{a}_privleak"] = privleak(auc, retain_auc.get(a))
        s["mia/privleak_reference"] = "retain model AUC" if retain_auc else "0.5"
    if retain_ratios is not None and "forget" in tables and "truth_ratio" in tables["forget"]:
        r = tables["forget"]["truth_ratio"].to_numpy()
        s["forget_quality"] = agg.forget_quality(r, retain_ratios)
        s["forget_quality_ks_statistic"] = agg.ks_statistic(r, retain_ratios)
        s["forget_quality_retain_n"] = int(len(retain_ratios))
    present = [k for k in agg.utility_keys() if k in s]
    if present:
        s["model_utility"] = agg.model_utility(s, present)
        s["model_utility_components"] = present
        if len(present) < 9:
            missing = [k for k in agg.utility_keys() if k not in s]
            logger.warning("model utility over %d of the 9 TOFU components; missing %s", len(present), missing)
    s["sets"] = {name: int(len(df)) for name, df in tables.items()}
    return s


def load_retain_stats(source) -> tuple[np.ndarray, dict[str, float]]:
    """The retain model's forget-set truth ratios R (and its MIA AUCs when known).

    ``source``: an array of R; an :class:`EvalResult`; our evaluation directory / its
    ``summary.json`` / its ``per_instance/forget.(parquet|jsonl)``; or an official TOFU log
    (``eval_log_forget.json``, or ``eval_log_aggregated.json``). TOFU logs give R from
    ``avg_paraphrased_loss`` / ``average_perturb_loss`` (equal to their logged ``truth_ratio``).
    """
    if isinstance(source, EvalResult):
        if "forget" not in source.tables:
            raise ValueError(f"the retain evaluation has no forget table (sets: {sorted(source.tables)}); "
                             "evaluate the retain model with the forget set included")
        return _truth_ratio_column(source.tables["forget"], "the retain evaluation's forget table"), _aucs(source.summary)
    if isinstance(source, (np.ndarray, list, tuple, torch.Tensor)):
        return np.asarray(source, dtype=np.float64).ravel(), {}
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"retain stats {p} not found: pass an evaluation directory, summary.json, or a TOFU eval_log_forget.json")
    if p.is_dir():
        if (p / EVAL_SUMMARY_FILE).exists():
            return load_retain_stats(EvalResult.load(p))
        if (p / "eval_log_forget.json").exists():
            p = p / "eval_log_forget.json"
        else:
            raise ValueError(f"{p} holds neither summary.json nor eval_log_forget.json")
    if p.suffix in (".parquet", ".jsonl"):
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p, orient="records", lines=True)
        return _truth_ratio_column(df, str(p)), {}
    obj = json.loads(p.read_text())
    if "eval_log_forget.json" in obj:  # TOFU eval_log_aggregated.json
        obj = obj["eval_log_forget.json"]
    if "truth_ratio" in obj or "avg_paraphrased_loss" in obj:  # one TOFU log
        return agg.truth_ratios_from_tofu_log(obj), {}
    if "sets" in obj:  # our summary.json
        return load_retain_stats(p.parent)
    raise ValueError(f"{p}: not a recognised evaluation output (ours or TOFU's eval_log_forget.json)")


def _truth_ratio_column(df: pd.DataFrame, where: str) -> np.ndarray:
    if "truth_ratio" not in df:
        raise ValueError(f"{where} has no truth_ratio column (columns: {list(df.columns)}): the retain model must be "
                         "evaluated on a forget split with perturbed answers (<forget>_perturbed)")
    return df["truth_ratio"].to_numpy(np.float64)


def _aucs(summary: Mapping) -> dict[str, float]:
    return {a: summary[f"mia/{a}_auc"] for a in MIA_ATTACKS if f"mia/{a}_auc" in summary}


# ---- entry points ------------------------------------------------------------------------------


def evaluate_model(
    model, tokenizer, data=None, forget_split: str | None = None, *, retain_stats=None,
    config: TofuEvalConfig | None = None, **settings: Any,
) -> EvalResult:
    """Run the metric suite on ``model`` and return per-instance tables and the summary.

    The settings are ``config`` (a :class:`TofuEvalConfig`) or, instead, ``data``,
    ``forget_split`` and keyword ``settings`` (its other fields: ``sets``, ``subset``,
    ``batch_size``, ``max_new_tokens``, ``max_length``, ``generate``, ``template``,
    ``data_config``, ``progress``). ``retain_stats``: the retain model's forget truth ratios
    (array), or anything :func:`load_retain_stats` reads; forget quality (and PrivLeak relative
    to the retain model's AUC, when known) is reported only then.
    """
    config = TofuEvalConfig.resolve(config, data=data, forget_split=forget_split, **settings)
    eval_sets = load_eval_sets(config.data, config.forget_split, sets=config.sets, subset=config.subset,
                               data_config=config.data_config)
    if not eval_sets:
        raise ValueError(f"none of the sets {list(config.sets)} exists in data source {config.data!r}")
    tables = compute_tables(model, tokenizer, eval_sets, config=config)
    summary = summarize(tables, retain_stats=retain_stats)
    summary["splits"] = {name: split for name, (split, _) in eval_sets.items()}
    data = config.data
    summary["settings"] = {"data": data.to_dict() if hasattr(data, "to_dict") else data,
                           "forget_split": config.forget_split, "batch_size": config.batch_size,
                           "max_new_tokens": config.max_new_tokens, "subset": config.subset, "generate": config.generate}
    return EvalResult(tables=tables, summary=summary)
