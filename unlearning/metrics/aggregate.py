"""Set-level aggregation of per-instance TOFU metrics: truth-ratio scores, forget quality, model utility.

Rules (TOFU, Maini et al. 2024; checked against the official ``aggregate_eval_stat.py`` and the
published Phi-1.5 evaluation logs, see ``tests/unlearning/evaluation/test_tofu_reference.py``):

* truth ratio, forget set     mean_i min(R_i, 1/R_i)          (1 = indifferent between true and false)
* truth ratio, other sets     mean_i max(0, 1 - R_i)          (1 = strongly prefers the true answer)
  with R_i = exp(nll_para - mean_j nll_pert_j) (:mod:`unlearning.metrics.truth_ratio`)
* probability                 forget / retain: mean_i exp(-nll_i); real authors / world facts:
                              mean_i of the option-normalised probability P(true)/(P(true)+sum P(pert))
* ROUGE-L                     mean_i ROUGE-L recall
* forget quality              p-value of the two-sample KS test (``scipy.stats.ks_2samp``) between the
                              evaluated model's and a retain model's forget-set truth ratios. (TOFU
                              tests 1/R; the KS statistic is invariant under the monotone map R -> 1/R.)
* model utility               harmonic mean of the nine numbers
                              {probability, ROUGE-L recall, truth ratio} x {retain, real authors, world facts}
                              (zero if any of them is zero).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import hmean, ks_2samp

__all__ = [
    "UTILITY_SETS",
    "UTILITY_METRICS",
    "utility_keys",
    "forget_truth_ratio",
    "utility_truth_ratio",
    "forget_quality",
    "ks_statistic",
    "model_utility",
    "summary_from_tofu_log",
    "truth_ratios_from_tofu_log",
]

UTILITY_SETS = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("probability", "rougeL_recall", "truth_ratio")


def utility_keys(sets=UTILITY_SETS) -> list[str]:
    """Summary keys ``"<set>/<metric>"`` that enter model utility."""
    return [f"{s}/{m}" for s in sets for m in UTILITY_METRICS]


def _arr(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("empty array of truth ratios")
    return a


def forget_truth_ratio(ratios) -> float:
    """Forget-set truth-ratio score mean(min(R, 1/R)) over instances."""
    r = _arr(ratios)
    return float(np.mean(np.minimum(r, 1.0 / r)))


def utility_truth_ratio(ratios) -> float:
    """Retain / real-authors / world-facts truth-ratio score mean(max(0, 1 - R)) over instances."""
    r = _arr(ratios)
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def forget_quality(truth_ratios, retain_truth_ratios) -> float:
    """KS-test p-value between the forget-set truth ratios of a model and of the retain model."""
    return float(ks_2samp(_arr(truth_ratios), _arr(retain_truth_ratios)).pvalue)


def ks_statistic(truth_ratios, retain_truth_ratios) -> float:
    """The KS statistic (max CDF gap) behind :func:`forget_quality`."""
    return float(ks_2samp(_arr(truth_ratios), _arr(retain_truth_ratios)).statistic)


def model_utility(values: Mapping[str, float], keys: list[str] | None = None) -> float:
    """Harmonic mean of the model-utility components of ``values``.

    ``values`` maps ``"<set>/<metric>"`` (see :func:`utility_keys`) to a number; ``keys``
    defaults to all nine TOFU components and every one must be present. A component <= 0 gives 0
    (the harmonic mean's limit), as in TOFU.
    """
    keys = utility_keys() if keys is None else list(keys)
    missing = [k for k in keys if k not in values or values[k] is None]
    if missing:
        raise KeyError(f"model utility needs {missing}; evaluate those sets or pass keys= explicitly")
    vals = np.array([float(values[k]) for k in keys], dtype=np.float64)
    if np.any(np.isnan(vals)):
        raise ValueError(f"NaN among model-utility components {dict(zip(keys, vals))}")
    if np.any(vals <= 0):
        return 0.0
    return float(hmean(vals))


# ---- official TOFU evaluation logs ------------------------------------------------------------
# One log (e.g. eval_log_forget.json) maps a field to {item index (str): value}; the aggregated
# file maps a log's file name to such a dict. Files of TOFU's legacy repository.

TOFU_LOG_SETS = {
    "eval_log.json": "retain",
    "eval_real_author_wo_options.json": "real_authors",
    "eval_real_world_wo_options.json": "world_facts",
    "eval_log_forget.json": "forget",
}


def _column(log: Mapping, field: str) -> np.ndarray:
    d = log[field]
    keys = sorted(d, key=lambda k: int(k))
    return np.array([np.asarray(d[k], dtype=np.float64) for k in keys], dtype=np.float64)


def truth_ratios_from_tofu_log(log: Mapping) -> np.ndarray:
    """Per-item R = exp(avg_paraphrased_loss - mean(average_perturb_loss)) from one TOFU log.

    Falls back to the logged ``truth_ratio`` field when the losses are absent.
    """
    if "avg_paraphrased_loss" in log and "average_perturb_loss" in log:
        para = _column(log, "avg_paraphrased_loss")  # (N,)
        pert = _column(log, "average_perturb_loss")  # (N, K)
        return np.exp(para - pert.mean(axis=1))
    if "truth_ratio" in log:
        return _column(log, "truth_ratio")
    raise KeyError("TOFU log has neither avg_paraphrased_loss/average_perturb_loss nor truth_ratio")


def summary_from_tofu_log(aggregated: Mapping) -> dict[str, float]:
    """Our summary keys computed with our aggregation from TOFU's per-item logs.

    ``aggregated`` is TOFU's ``eval_log_aggregated.json`` content (log file name -> log). Uses the
    same per-set rules as :func:`unlearning.evaluation.evaluate_model`, so reproducing TOFU's
    published model utility from these logs checks the aggregation end to end.
    """
    out: dict[str, float] = {}
    for fname, name in TOFU_LOG_SETS.items():
        if fname not in aggregated:
            continue
        log = aggregated[fname]
        nll = _column(log, "avg_gt_loss")  # (N,)
        if name in ("real_authors", "world_facts"):
            pert = _column(log, "average_perturb_loss")  # (N, K)
            allp = np.concatenate([nll[:, None], pert], axis=1)  # (N, K+1)
            w = np.exp(-(allp - allp.min(axis=1, keepdims=True)))
            prob = w[:, 0] / w.sum(axis=1)
        else:
            prob = np.exp(-nll)
        out[f"{name}/probability"] = float(prob.mean())
        out[f"{name}/rougeL_recall"] = float(_column(log, "rougeL_recall").mean())
        r = truth_ratios_from_tofu_log(log)
        out[f"{name}/truth_ratio"] = forget_truth_ratio(r) if name == "forget" else utility_truth_ratio(r)
    present = [s for s in UTILITY_SETS if f"{s}/probability" in out]
    if len(present) == len(UTILITY_SETS):
        out["model_utility"] = model_utility(out)
    return out
