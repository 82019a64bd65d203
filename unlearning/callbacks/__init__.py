"""``transformers.TrainerCallback`` s for analysis during unlearning, one module per callback.

Each works with any ``transformers.Trainer``; :class:`unlearning.training.UnlearningTrainer` adds
the ones a run asks for (docs/training.md, docs/any_trainer.md).

============================  ==================================================================
callback                      what it does
============================  ==================================================================
:class:`JsonlLogCallback`     the trainer's log rows, appended to ``logs.jsonl`` as they happen
:class:`TokenWeightCallback`  per optimizer step, the distribution of the objective's token
                              weights and weight vs token likelihood (``analysis/*.jsonl``)
:class:`GEffectCallback`      G-effects (and PG-effects, probe weights) of the step's real,
                              pre-clip gradient on fixed probe sets (``analysis/geffect/``)
:class:`WeightMaskCallback`   WAGLE: clip, then zero the gradients of masked-out weights
:class:`StepEvalCallback`     any evaluation function at chosen steps (``eval/``)
:class:`EvalCallback`         TOFU's evaluation suite at chosen steps, sharded over processes
============================  ==================================================================

The run-folder names they write are defined in :mod:`unlearning.runs.folder`.
"""
from unlearning.callbacks.geffects import GEffectCallback
from unlearning.callbacks.jsonl_logs import JsonlLogCallback, log_kind
from unlearning.callbacks.step_eval import StepEvalCallback, numeric_summary
from unlearning.callbacks.tofu_eval import EvalCallback
from unlearning.callbacks.token_weights import TokenWeightCallback, token_weight_stats, weight_vs_likelihood
from unlearning.callbacks.weight_mask import WeightMaskCallback

__all__ = ["EvalCallback", "GEffectCallback", "JsonlLogCallback", "StepEvalCallback", "TokenWeightCallback",
           "WeightMaskCallback", "log_kind", "numeric_summary", "token_weight_stats", "weight_vs_likelihood"]
