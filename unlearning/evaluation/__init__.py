"""Evaluations of a causal LM, one module per benchmark; each returns an :class:`EvalResult`.

- :mod:`unlearning.evaluation.tofu`: TOFU's suite (probability, ROUGE-L, truth ratio, forget
  quality, model utility) plus extraction strength and MIA: :func:`evaluate_model`, its settings
  :class:`TofuEvalConfig`.
- :mod:`unlearning.evaluation.muse`: MUSE's VerbMem, KnowMem and PrivLeak: :func:`evaluate_muse` (settings :class:`MuseEvalConfig`).
- :mod:`unlearning.evaluation.wmdp`: WMDP hazard accuracy and MMLU-style utility: :func:`evaluate_wmdp`.

The metric functions they call live in :mod:`unlearning.metrics`; evaluation during training
is :class:`unlearning.callbacks.EvalCallback` (TOFU) or
:class:`unlearning.callbacks.StepEvalCallback` (any evaluation function). See docs/metrics.md
and docs/muse_wmdp.md.
"""
from unlearning.evaluation.muse import (KNOWMEM_STOP_STRINGS, MUSE_METRICS, MUSE_RETRAIN_AUC, MuseEvalConfig,
                                        evaluate_muse, knowmem_prompt, knowmem_table, privleak_reference, verbmem_table)
from unlearning.evaluation.result import EvalResult
from unlearning.evaluation.tofu import (ALL_SETS, TofuEvalConfig, compute_tables, evaluate_model, load_eval_sets,
                                        load_retain_stats, merge_shards, summarize)
from unlearning.evaluation.wmdp import evaluate_wmdp, wmdp_question_sets

__all__ = ["ALL_SETS", "EvalResult", "KNOWMEM_STOP_STRINGS", "MUSE_METRICS", "MUSE_RETRAIN_AUC", "MuseEvalConfig", "TofuEvalConfig",
           "compute_tables", "evaluate_model", "evaluate_muse", "evaluate_wmdp", "knowmem_prompt", "knowmem_table",
           "load_eval_sets", "load_retain_stats", "merge_shards", "privleak_reference", "summarize", "verbmem_table",
           "wmdp_question_sets"]
