"""Evaluate a causal LM on MUSE (Shi et al. 2024): VerbMem, KnowMem (forget / retain), PrivLeak.

Library::

    from unlearning.evaluation import evaluate_muse
    retain = evaluate_muse(retain_model, tok, "embedded", metrics=("privleak",))
    res = evaluate_muse(model, tok, "embedded", retain_reference=retain)   # or "muse-bench/MUSE-News"
    res.summary["verbmem_f"], res.summary["knowmem_r"], res.summary["privleak"]
    res.tables["knowmem_forget"]                                             # one row per question
    res.save("runs/npo/muse")

Summary keys (fractions in [0, 1]; MUSE's tables show them x 100):

===========================  ==========================================================
``verbmem_f``                mean ROUGE-L F1 of the VerbMem continuations (forget)
``knowmem_f`` / ``knowmem_r`` mean ROUGE-L F1 of the KnowMem answers on forget / retain QA
                             (``knowmem_r`` is MUSE's utility preservation)
``privleak``                 PrivLeak in percent, relative to the retain reference
``privleak/auc``             Min-K% AUC, our orientation: P(holdout score > forget score)
``privleak/auc_muse``        the same in MUSE's orientation (1 - ``privleak/auc``)
``privleak/auc_retain``      the reference AUC used (our orientation) and
``privleak/reference``       where it came from: "retain model", "given" or "default 0.5"
``mia/<attack>_auc``         forget-vs-holdout AUC of every attack (loss, zlib, min_k, min_k_plus_plus)
``*_recall``                 ROUGE-L recall next to every F1 mean
===========================  ==========================================================

Tables: ``verbmem_forget``, ``knowmem_forget``, ``knowmem_retain``, ``privleak_forget``,
``privleak_holdout`` (and ``privleak_retain``).

The metrics (``swj0419/muse_bench``):

* **VerbMem** (no verbatim memorisation): greedy continuation of each ``verbmem`` prompt (up to
  128 new tokens) against the reference continuation ``gt`` cut to its first 128 tokens (MUSE
  tokenises ``gt`` *with* the BOS token before cutting, so 127 text tokens remain for a Llama
  tokenizer; we do the same). Score: ROUGE-L **F1** (``rouge_score``, no stemming), mean over
  prompts. MUSE's tables multiply by 100; we report fractions.
* **KnowMem** (no knowledge memorisation; on the retain QA it is the *utility*): the prompt is
  the in-context examples, each ``"Question: {q}\\nAnswer: {a}\\n\\n"``, then
  ``"Question: {q}\\nAnswer: "`` (trailing space, as MUSE); greedy decoding of up to 32 new
  tokens, cut before the first ``"\\n\\n"``, ``"\\nQuestion"`` or ``"Question:"``; ROUGE-L F1
  against the answer, mean over questions.
* **PrivLeak**: Min-K% (k = 0.4) membership scores of the ``privleak`` forget and holdout
  texts (whole text scored, BOS prepended, truncated to ``max_length``); the AUC is turned into
  PrivLeak relative to a retain model, see :func:`unlearning.metrics.mia.privleak` and
  docs/muse_wmdp.md for the orientation of the AUC.

CLI: ``python -m unlearning.evaluate_muse`` (:mod:`unlearning.cli.evaluate_muse`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from unlearning.data.embedded.news import EmbeddedNewsConfig
from unlearning.data.loading import EMBEDDED
from unlearning.data.muse import load_muse
from unlearning.evaluation.result import EvalResult
from unlearning.metrics.generation import greedy_continuations, rouge_scores
from unlearning.metrics.mia import MIA_ATTACKS, mia_auc, privleak, text_mia_scores

logger = logging.getLogger(__name__)

__all__ = ["KNOWMEM_STOP_STRINGS", "MUSE_METRICS", "MUSE_RETRAIN_AUC", "MuseEvalConfig", "evaluate_muse",
           "knowmem_prompt", "knowmem_table", "privleak_reference", "verbmem_table"]

KNOWMEM_STOP_STRINGS = ("\n\n", "\nQuestion", "Question:")

MUSE_METRICS = ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
#: Min-40% forget-vs-holdout AUC of MUSE's retrained Llama-2-7B models (``muse_bench``
#: ``constants.AUC_RETRAIN["<corpus>"]["forget_holdout_Min-40%"]`` = 0.4772 News, 0.5393 Books),
#: converted to our orientation (1 - MUSE's value). Use them only for MUSE's own target models.
MUSE_RETRAIN_AUC = {"news": 1.0 - 0.4772, "books": 1.0 - 0.5393}


def _truncate_reference(tokenizer, gt: str, max_tokens: int) -> tuple[str, int]:
    """(gt cut to its first ``max_tokens`` tokens, BOS included as MUSE does; the number of text tokens kept)."""
    ids = tokenizer(gt, add_special_tokens=True)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    kept = ids[:max_tokens]
    text_tokens = max_tokens if len(ids) >= max_tokens else sum(1 for i in kept if i not in special)
    return tokenizer.decode(kept, skip_special_tokens=True), text_tokens


def verbmem_table(
    model, tokenizer, prompts: Sequence[str], gts: Sequence[str], *, max_new_tokens: int = 128,
    match_reference_length: bool = True, batch_size: int = 16, stemmer: bool = False, progress: bool = False,
) -> pd.DataFrame:
    """One row per VerbMem prompt: prompt, gt (cut to ``max_new_tokens`` tokens), generation, ROUGE.

    ``match_reference_length``: a reference shorter than ``max_new_tokens`` tokens is compared
    with a continuation of as many tokens as it has (MUSE always generates ``max_new_tokens``;
    its News references are that long, so nothing changes there, but on short documents a
    fixed 128-token continuation runs into the next document and caps the F1 well below 1).
    """
    if len(prompts) != len(gts):
        raise ValueError(f"{len(prompts)} prompts but {len(gts)} reference continuations")
    cut = [_truncate_reference(tokenizer, g, max_new_tokens) for g in gts]
    refs = [c[0] for c in cut]
    limits = [c[1] for c in cut] if match_reference_length else None
    gens = greedy_continuations(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens,
                                batch_size=batch_size, limits=limits, progress=progress)
    table = pd.DataFrame({"index": range(len(prompts)), "prompt": list(prompts), "gt": refs, "generation": gens})
    return pd.concat([table, rouge_scores(gens, refs, stemmer=stemmer)], axis=1)


def knowmem_prompt(question: str, icl: Sequence[tuple[str, str]] = (), *, trailing_space: bool = True) -> str:
    """MUSE's KnowMem prompt: in-context examples, then the question (``"Answer: "`` ends with a space)."""
    head = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl)
    return head + f"Question: {question}\nAnswer:" + (" " if trailing_space else "")


def knowmem_table(
    model, tokenizer, questions: Sequence[str], answers: Sequence[str], icl: Sequence[tuple[str, str]] = (), *,
    max_new_tokens: int = 32, batch_size: int = 16, trailing_space: bool = True, stemmer: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per KnowMem question: question, answer, prompt, generation (cut at MUSE's stop strings), ROUGE."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    prompts = [knowmem_prompt(q, icl, trailing_space=trailing_space) for q in questions]
    gens = greedy_continuations(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                stop_strings=KNOWMEM_STOP_STRINGS, progress=progress)
    table = pd.DataFrame({"index": range(len(questions)), "question": list(questions), "answer": list(answers),
                          "prompt": prompts, "generation": gens})
    return pd.concat([table, rouge_scores(gens, list(answers), stemmer=stemmer)], axis=1)


def _first(ds, n: int | None):
    return ds if n is None else ds.select(range(min(n, len(ds))))


def privleak_reference(retain_reference, attack: str = "min_k") -> tuple[float, str]:
    """(reference AUC in our orientation, its origin) from a float, a summary dict or an EvalResult."""
    if retain_reference is None:
        return 0.5, "default 0.5"
    if isinstance(retain_reference, EvalResult):
        retain_reference = retain_reference.summary
    if isinstance(retain_reference, Mapping):
        key = f"mia/{attack}_auc"
        if key not in retain_reference:
            raise ValueError(f"the retain summary has no {key!r}; evaluate the retain model with 'privleak' in metrics")
        return float(retain_reference[key]), "retain model"
    return float(retain_reference), "given"


@dataclass(frozen=True)
class MuseEvalConfig:
    """The settings of one MUSE evaluation (validated once, here); see :func:`evaluate_muse`.

    Args:
        source: ``"embedded"``, a MUSE folder, or ``"muse-bench/MUSE-News"`` / ``"-Books"``.
        metrics: a subset of :data:`MUSE_METRICS`.
        embedded: an ``EmbeddedNewsConfig`` for a non-default embedded corpus.
        privleak_attack: the attack PrivLeak uses (MUSE: ``min_k`` with ``k=0.4``).
        k: the fraction of lowest token log-probs of Min-K% (and Min-K%++).
        verbmem_max_new_tokens / knowmem_max_new_tokens: greedy tokens generated (MUSE: 128 / 32).
        verbmem_match_reference_length: generate as many tokens as a short reference has
            (no change for references of >= ``verbmem_max_new_tokens`` tokens; False = MUSE's
            fixed length), see :func:`verbmem_table`.
        knowmem_trailing_space: MUSE's prompt ends with ``"Answer: "``; False drops the space.
        stemmer: ROUGE with stemming (MUSE: off).
        max_length: token limit of the PrivLeak texts (default: the model's context length).
        batch_size: batch size of generation and scoring.
        max_samples: evaluate only the first N items of every set (quick checks).
        progress: progress bars.
    """

    source: str | os.PathLike = EMBEDDED
    metrics: Sequence[str] = MUSE_METRICS
    embedded: EmbeddedNewsConfig | None = None
    privleak_attack: str = "min_k"
    k: float = 0.4
    verbmem_max_new_tokens: int = 128
    verbmem_match_reference_length: bool = True
    knowmem_max_new_tokens: int = 32
    knowmem_trailing_space: bool = True
    stemmer: bool = False
    max_length: int | None = None
    batch_size: int = 16
    max_samples: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(MUSE_METRICS))
        if unknown:
            raise ValueError(f"unknown MUSE metrics {unknown}; valid: {', '.join(MUSE_METRICS)}")
        if self.privleak_attack not in MIA_ATTACKS:
            raise ValueError(f"privleak_attack must be one of {MIA_ATTACKS}, got {self.privleak_attack!r}")

    def replace(self, **changes: Any) -> MuseEvalConfig:
        return dataclasses.replace(self, **changes)

    def load(self, subset: str, split: str, *, limit: bool = True):
        """A split of MUSE's data (its first ``max_samples`` rows when ``limit``)."""
        ds = load_muse(self.source, subset, split, embedded=self.embedded)
        return _first(ds, self.max_samples) if limit else ds


def evaluate_muse(model, tokenizer, source: str | os.PathLike | None = None, *, retain_reference=None,
                  config: MuseEvalConfig | None = None, **settings: Any) -> EvalResult:
    """MUSE's four metrics for one model; see the module docstring for the keys.

    The settings are ``config`` (a :class:`MuseEvalConfig`) or, instead, ``source`` and keyword
    ``settings`` (its other fields: ``metrics``, ``embedded``, ``privleak_attack``, ``k``,
    ``max_samples``, ...). ``retain_reference``: the retain model's PrivLeak AUC: an
    :class:`EvalResult` or summary of ``evaluate_muse(retain_model, ..., metrics=("privleak",))``,
    a float (our orientation, e.g. :data:`MUSE_RETRAIN_AUC`), a retain model (evaluated here), or
    None (0.5, as open-unlearning's default).
    """
    if config is None:
        config = MuseEvalConfig(**({} if source is None else {"source": source}), **settings)
    elif source is not None or settings:
        raise ValueError("pass config= or source and the settings, not both; change a config with config.replace(...)")
    tables: dict[str, pd.DataFrame] = {}
    summary: dict = {}
    if "verbmem_f" in config.metrics:
        _verbmem(model, tokenizer, config, tables, summary)
    for metric, which in (("knowmem_f", "forget"), ("knowmem_r", "retain")):
        if metric in config.metrics:
            _knowmem(model, tokenizer, config, metric, which, tables, summary)
    if "privleak" in config.metrics:
        _privleak(model, tokenizer, config, retain_reference, tables, summary)
    summary["sets"] = {name: len(t) for name, t in tables.items()}
    c = config
    summary["settings"] = {
        "source": os.fspath(c.source), "metrics": list(c.metrics), "k": c.k,
        "verbmem_max_new_tokens": c.verbmem_max_new_tokens,
        "verbmem_match_reference_length": c.verbmem_match_reference_length,
        "knowmem_max_new_tokens": c.knowmem_max_new_tokens, "knowmem_trailing_space": c.knowmem_trailing_space,
        "stemmer": c.stemmer, "max_samples": c.max_samples,
    }
    logger.info("MUSE: %s", {k_: v for k_, v in summary.items() if isinstance(v, float)})
    return EvalResult(tables=tables, summary=summary)


def _verbmem(model, tokenizer, config: MuseEvalConfig, tables: dict, summary: dict) -> None:
    ds = config.load("verbmem", "forget")
    t = verbmem_table(model, tokenizer, ds["prompt"], ds["gt"], max_new_tokens=config.verbmem_max_new_tokens,
                      match_reference_length=config.verbmem_match_reference_length, batch_size=config.batch_size,
                      stemmer=config.stemmer, progress=config.progress)
    tables["verbmem_forget"] = t
    summary["verbmem_f"], summary["verbmem_f_recall"] = float(t["rougeL_f1"].mean()), float(t["rougeL_recall"].mean())


def _knowmem(model, tokenizer, config: MuseEvalConfig, metric: str, which: str, tables: dict, summary: dict) -> None:
    qa, icl = config.load("knowmem", f"{which}_qa"), config.load("knowmem", f"{which}_qa_icl", limit=False)
    t = knowmem_table(model, tokenizer, qa["question"], qa["answer"], list(zip(icl["question"], icl["answer"])),
                      max_new_tokens=config.knowmem_max_new_tokens, trailing_space=config.knowmem_trailing_space,
                      batch_size=config.batch_size, stemmer=config.stemmer, progress=config.progress)
    tables[f"knowmem_{which}"] = t
    summary[metric], summary[f"{metric}_recall"] = float(t["rougeL_f1"].mean()), float(t["rougeL_recall"].mean())


def _privleak(model, tokenizer, config: MuseEvalConfig, retain_reference, tables: dict, summary: dict) -> None:
    for split in ("forget", "holdout", "retain"):
        texts = [str(x) for x in config.load("privleak", split)["text"]]
        tables[f"privleak_{split}"] = text_mia_scores(model, tokenizer, texts, max_length=config.max_length, k=config.k,
                                                      batch_size=config.batch_size)
    f, h = tables["privleak_forget"], tables["privleak_holdout"]
    for attack in MIA_ATTACKS:
        summary[f"mia/{attack}_auc"] = mia_auc(f[f"mia_{attack}"], h[f"mia_{attack}"])
    if isinstance(retain_reference, torch.nn.Module):  # the retain model: its own PrivLeak scores
        retain_reference = evaluate_muse(retain_reference, tokenizer,
                                         config=config.replace(metrics=("privleak",), progress=False))
    ref_auc, origin = privleak_reference(retain_reference, config.privleak_attack)
    auc = summary[f"mia/{config.privleak_attack}_auc"]
    summary.update({
        "privleak": privleak(auc, ref_auc), "privleak/auc": auc, "privleak/auc_muse": 1.0 - auc,
        "privleak/auc_retain": ref_auc, "privleak/reference": origin, "privleak/attack": config.privleak_attack,
    })
