"""TOFU-style evaluation metrics for unlearning (see docs/metrics.md for every definition and source).

Per-instance metrics are functions ``(model, batch, ...) -> Tensor[N]`` on the project's batch
convention (:mod:`geffect.losses`); each has a ``*_from_logits`` twin so one forward pass can feed
several metrics. Set-level aggregation (truth-ratio scores, forget quality, model utility) lives in
:mod:`unlearning.metrics.aggregate`; the full suite is :func:`unlearning.evaluation.evaluate_model`.
"""
from unlearning.metrics.aggregate import (
    forget_quality,
    forget_truth_ratio,
    model_utility,
    utility_keys,
    utility_truth_ratio,
)
from unlearning.metrics.extraction import extraction_strength, extraction_strength_from_logits
from unlearning.metrics.generation import generate_answers, rouge_l_recall
from unlearning.metrics.likelihood import (
    answer_probability,
    exact_memorization,
    exact_memorization_from_logits,
    probability_with_options,
)
from unlearning.metrics.mia import mia_auc, mia_scores, mia_scores_from_logits, privleak
from unlearning.metrics.truth_ratio import truth_ratio, truth_ratio_from_nll

__all__ = [
    "answer_probability",
    "exact_memorization",
    "exact_memorization_from_logits",
    "extraction_strength",
    "extraction_strength_from_logits",
    "forget_quality",
    "forget_truth_ratio",
    "generate_answers",
    "mia_auc",
    "mia_scores",
    "mia_scores_from_logits",
    "model_utility",
    "privleak",
    "probability_with_options",
    "rouge_l_recall",
    "truth_ratio",
    "truth_ratio_from_nll",
    "utility_keys",
    "utility_truth_ratio",
]
