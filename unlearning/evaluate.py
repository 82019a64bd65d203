"""Evaluate a causal LM with the TOFU metric suite, plus extraction strength and MIA.

Library::

    from unlearning.evaluate import evaluate_model
    result = evaluate_model(model, tokenizer, data="embedded", forget_split="forget10",
                            retain_stats="runs/retain/eval")     # or an official eval_log_forget.json
    result.summary["model_utility"], result.tables["forget"]      # dict, pandas DataFrame
    result.save("runs/satimp/eval")

CLI (every option is a field of :class:`EvaluateArguments`; ``--help`` lists them with defaults)::

    python -m unlearning.evaluate --model PATH --data embedded --split forget10 \
        [--retain-model PATH | --retain-logs FILE] --output-dir DIR [--max-samples N]

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

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from geffect.io import atomic_write, atomic_write_json, atomic_write_parquet, jsonable
from geffect.losses import answer_nll
from unlearning.cli import dataclass_parser, parse_dataclass
from unlearning.data import (QACollator, QADataset, as_source, get_template, holdout_split_for,
                             perturbed_split_for)
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
from unlearning.models import load_model_and_tokenizer

__all__ = ["ALL_SETS", "EvalResult", "EvaluateArguments", "build_parser", "compute_tables", "evaluate_model",
           "load_eval_sets", "load_retain_stats", "main", "parse_args", "summarize"]

logger = logging.getLogger(__name__)

ALL_SETS = ("forget", "retain", "real_authors", "world_facts", "holdout")
OPTION_SETS = ("real_authors", "world_facts")  # probability normalised over the answer options


# ---- results ---------------------------------------------------------------------------------


@dataclass
class EvalResult:
    """Per-instance tables (one DataFrame per evaluated set) and the summary dict."""

    tables: dict[str, pd.DataFrame]
    summary: dict = field(default_factory=dict)

    def save(self, output_dir: str | os.PathLike, *, fmt: str = "parquet") -> Path:
        """Write ``summary.json`` and ``per_instance/<set>.<fmt>`` (fmt: parquet or jsonl) atomically."""
        if fmt not in ("parquet", "jsonl"):
            raise ValueError(f"fmt must be 'parquet' or 'jsonl', got {fmt!r}")
        out = Path(output_dir)
        for name, df in self.tables.items():
            target = out / "per_instance" / f"{name}.{fmt}"
            if fmt == "parquet":
                atomic_write_parquet(target, df)
            else:
                atomic_write(target, lambda fh, df=df: df.to_json(fh, orient="records", lines=True, double_precision=15))
        atomic_write_json(out / "summary.json", jsonable(self.summary))
        return out

    @classmethod
    def load(cls, output_dir: str | os.PathLike) -> EvalResult:
        """Read a directory written by :meth:`save`."""
        out = Path(output_dir)
        summary = json.loads((out / "summary.json").read_text())
        tables = {}
        for p in sorted((out / "per_instance").glob("*")):
            if p.suffix == ".parquet":
                tables[p.stem] = pd.read_parquet(p)
            elif p.suffix == ".jsonl":
                tables[p.stem] = pd.read_json(p, orient="records", lines=True)
        return cls(tables=tables, summary=summary)




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
    model, tokenizer, template, name: str, rows: list[dict], indices: list[int], *,
    batch_size: int, max_new_tokens: int, max_length: int, generate: bool, eos_id, progress: bool,
) -> pd.DataFrame:
    """One row per item of ``rows`` with every per-instance metric that applies to set ``name``."""
    kw = dict(batch_size=batch_size, max_length=max_length, eos_id=eos_id)
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
        texts = generate_answers(model, tokenizer, tf["prompt_ids"], max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, progress=progress)
        df["generated"] = texts
        df["rougeL_recall"] = rouge_l_recall(texts, df["answer"].tolist()).tolist()
    return df


def compute_tables(
    model, tokenizer, eval_sets: Mapping[str, tuple[str, list[dict]]], *, template=None, batch_size: int = 16,
    max_new_tokens: int = 200, max_length: int = 512, generate: bool = True, shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Per-instance tables for ``eval_sets``; with ``shard=(rank, world)`` only items rank, rank+world, ..."""
    if template is None:  # the model's family (phi, llama2-chat) first, else the tokenizer's chat template / plain
        template = get_template(model)
        if template.name == "plain":
            template = get_template(tokenizer)
    eos_id = resolve_eos_token_id(model, tokenizer.eos_token_id)
    was_training = model.training
    model.eval()
    tables = {}
    try:
        for name, (_, rows) in tqdm(list(eval_sets.items()), desc="evaluate", disable=not progress):
            idx = list(range(len(rows)))
            if shard is not None:
                rank, world = shard
                idx = idx[rank::world]
            tables[name] = _evaluate_set(
                model, tokenizer, template, name, [rows[i] for i in idx], idx, batch_size=batch_size,
                max_new_tokens=max_new_tokens, max_length=max_length, generate=generate, eos_id=eos_id,
                progress=progress,
            )
    finally:
        model.train(was_training)
    return tables


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
        if (p / "summary.json").exists():
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
    model,
    tokenizer,
    data: str = "embedded",
    forget_split: str = "forget10",
    *,
    retain_stats=None,
    batch_size: int = 16,
    max_new_tokens: int = 200,
    max_length: int = 512,
    subset: int | None = None,
    sets: Sequence[str] = ALL_SETS,
    generate: bool = True,
    template=None,
    data_config=None,
    progress: bool = True,
) -> EvalResult:
    """Run the metric suite on ``model`` and return per-instance tables and the summary.

    ``retain_stats``: the retain model's forget truth ratios (array), or anything
    :func:`load_retain_stats` reads; forget quality (and PrivLeak relative to the retain model's
    AUC, when known) is reported only then. ``subset``: first N items of every set (TOFU's legacy
    evaluation uses the first 300). ``generate=False`` skips generation and ROUGE-L.
    ``data_config``: an ``EmbeddedConfig`` when the embedded benchmark is not the default one
    (e.g. models built with ``tiny_recipe()``).
    """
    eval_sets = load_eval_sets(data, forget_split, sets=sets, subset=subset, data_config=data_config)
    if not eval_sets:
        raise ValueError(f"none of the sets {list(sets)} exists in data source {data!r}")
    tables = compute_tables(model, tokenizer, eval_sets, template=template, batch_size=batch_size,
                            max_new_tokens=max_new_tokens, max_length=max_length, generate=generate, progress=progress)
    summary = summarize(tables, retain_stats=retain_stats)
    summary["splits"] = {name: split for name, (split, _) in eval_sets.items()}
    summary["settings"] = {"data": data.to_dict() if hasattr(data, "to_dict") else data, "forget_split": forget_split, "batch_size": batch_size,
                           "max_new_tokens": max_new_tokens, "subset": subset, "generate": generate}
    return EvalResult(tables=tables, summary=summary)


@dataclass
class EvaluateArguments:
    """Options of ``python -m unlearning.evaluate``."""

    model: str = field(metadata={"help": "Model to evaluate: a Hugging Face causal LM name or a local folder."})
    output_dir: str = field(metadata={"help": "Folder for summary.json and per_instance/<set>.<format>."})
    data: str = field(
        default="embedded",
        metadata={"help": "Data source: 'embedded' (offline default benchmark), 'locuslab/TOFU' or a local TOFU-style folder."},
    )
    split: str = field(default="forget10", metadata={"help": "Forget split (forget01 / forget05 / forget10)."})
    retain_model: str | None = field(
        default=None,
        metadata={"help": "Retain model (never trained on the forget split), evaluated first for forget quality."},
    )
    retain_logs: str | None = field(
        default=None,
        metadata={"help": "Instead of --retain-model: its saved evaluation (folder or summary.json) or a TOFU "
                          "eval_log_forget.json."},
    )
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N items of every set."})
    batch_size: int = field(default=16, metadata={"help": "Batch size of the teacher-forced passes and of generation."})
    max_new_tokens: int = field(default=200, metadata={"help": "Greedy tokens generated per answer (ROUGE-L)."})
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per question + answer."})
    format: str = field(
        default="parquet", metadata={"help": "File format of the per-instance tables.", "choices": ("parquet", "jsonl")}
    )
    generate: bool = field(default=True, metadata={"help": "Generate answers for ROUGE-L (off: --no-generate)."})
    device: str = field(default="cpu", metadata={"help": "Device to load the models on (cpu, cuda, cuda:1, ...)."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, float32, bfloat16, float16."})
    progress: bool = field(default=True, metadata={"help": "Progress bars (off: --no-progress)."})

    def __post_init__(self) -> None:
        if self.retain_model and self.retain_logs:
            raise ValueError("pass either --retain-model or --retain-logs, not both: both give the retain model's "
                             "forget-set truth ratios for forget quality")
        for name in ("batch_size", "max_new_tokens", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max-samples must be >= 1 (or left out for every item), got {self.max_samples}")


def build_parser() -> HfArgumentParser:
    """The parser of ``python -m unlearning.evaluate``, built from :class:`EvaluateArguments`."""
    return dataclass_parser(EvaluateArguments, prog="python -m unlearning.evaluate", description=__doc__.split("\n\n")[0])


def parse_args(argv: Sequence[str] | None = None) -> EvaluateArguments:
    """:class:`EvaluateArguments` from command-line arguments (``sys.argv[1:]`` when None)."""
    return parse_dataclass(build_parser(), argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    common = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, max_length=args.max_length,
                  subset=args.max_samples, progress=args.progress)
    retain_stats = args.retain_logs
    if args.retain_model:
        logger.info("evaluating the retain model %s on the forget and holdout sets", args.retain_model)
        rmodel, rtok = load_model_and_tokenizer(args.retain_model, dtype=args.dtype, device=args.device)
        retain_stats = evaluate_model(rmodel, rtok, args.data, args.split, sets=("forget", "holdout"),
                                      generate=False, **common)
        del rmodel
    model, tok = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
    result = evaluate_model(model, tok, args.data, args.split, retain_stats=retain_stats,
                            generate=args.generate, **common)
    result.summary["settings"].update(model=args.model, retain_model=args.retain_model, retain_logs=args.retain_logs)
    out = result.save(args.output_dir, fmt=args.format)
    keys = ["forget/truth_ratio", "forget/extraction_strength", "forget_quality", "model_utility", "mia/min_k_auc"]
    logger.info("wrote %s: %s", out, {k: result.summary[k] for k in keys if k in result.summary})
    return result.summary


if __name__ == "__main__":
    main()
