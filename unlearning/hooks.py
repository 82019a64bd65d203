"""Deprecated path: the analysis callbacks live in :mod:`unlearning.callbacks` (one module per callback),
the run-folder names and JSON-lines tables in :mod:`unlearning.runs.folder`, probe building in
:func:`unlearning.data.probe_batches`.

Kept for one release; importing this module emits a ``DeprecationWarning``.
"""
import warnings

from geffect.batches import concat_batches  # noqa: F401
from unlearning.callbacks import (EvalCallback, GEffectCallback, JsonlLogCallback, TokenWeightCallback,  # noqa: F401
                                  WeightMaskCallback, log_kind, token_weight_stats, weight_vs_likelihood)
from unlearning.callbacks.token_weights import QUANTILES, SMALL_WEIGHT  # noqa: F401
from unlearning.data.probes import build_probes  # noqa: F401
from unlearning.evaluation import merge_shards  # noqa: F401
from unlearning.runs.folder import (ANALYSIS_DIR, EVAL_DIR, EVAL_HISTORY_FILE, GEFFECT_DIR, LOGS_FILE,  # noqa: F401
                                    PROBE_INSTANCE_WEIGHTS, PROBE_TOKEN_WEIGHTS, TOKEN_WEIGHTS_FILE,
                                    WEIGHT_VS_LIKELIHOOD_FILE, append_jsonl, clear_step_tables, read_jsonl,
                                    truncate_step_tables)

__all__ = ["ANALYSIS_DIR", "EVAL_DIR", "EVAL_HISTORY_FILE", "EvalCallback", "GEffectCallback", "JsonlLogCallback",
           "LOGS_FILE", "PROBE_INSTANCE_WEIGHTS", "PROBE_TOKEN_WEIGHTS", "TokenWeightCallback", "WeightMaskCallback",
           "append_jsonl", "build_probes", "clear_step_tables", "concat_batches", "merge_shards", "read_jsonl",
           "token_weight_stats", "truncate_step_tables", "weight_vs_likelihood"]

warnings.warn("unlearning.hooks is split: the callbacks are in unlearning.callbacks, the run-folder names and "
              "append_jsonl / read_jsonl / truncate_step_tables in unlearning.runs, probe building is "
              "unlearning.data.probe_batches (the old path goes in the next release)", DeprecationWarning, stacklevel=2)
