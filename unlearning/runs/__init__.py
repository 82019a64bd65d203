"""Run folders: what an unlearning run writes (:mod:`unlearning.runs.folder`) and replaying one
(:mod:`unlearning.runs.replay`)."""
from unlearning.runs.folder import (ANALYSIS_DIR, CHECKPOINT_PREFIX, EVAL_DIR, EVAL_HISTORY_FILE, EVAL_SUMMARY_FILE,
                                    GEFFECT_DIR, LOGS_FILE, PER_INSTANCE_DIR, PROBE_INSTANCE_WEIGHTS,
                                    PROBE_TOKEN_WEIGHTS, REFERENCE_COPY, RUN_CONFIG_FILE, TOKEN_WEIGHTS_FILE,
                                    WEIGHT_VS_LIKELIHOOD_FILE, RunFolder, append_jsonl, checkpoint_step,
                                    clear_step_tables, read_jsonl, truncate_step_tables)
from unlearning.runs.replay import replay_run, resolve_objective

__all__ = ["ANALYSIS_DIR", "CHECKPOINT_PREFIX", "EVAL_DIR", "EVAL_HISTORY_FILE", "EVAL_SUMMARY_FILE", "GEFFECT_DIR",
           "LOGS_FILE", "PER_INSTANCE_DIR", "PROBE_INSTANCE_WEIGHTS", "PROBE_TOKEN_WEIGHTS", "REFERENCE_COPY",
           "RUN_CONFIG_FILE", "RunFolder", "TOKEN_WEIGHTS_FILE", "WEIGHT_VS_LIKELIHOOD_FILE", "append_jsonl",
           "checkpoint_step", "clear_step_tables", "read_jsonl", "replay_run", "resolve_objective", "truncate_step_tables"]
