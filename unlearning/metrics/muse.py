"""Deprecated path: MUSE's evaluation lives in :mod:`unlearning.evaluation.muse` (VerbMem, KnowMem),
its generation and ROUGE helpers in :mod:`unlearning.metrics.generation` and its text membership
scores in :mod:`unlearning.metrics.mia`.

Kept for one release; importing this module emits a ``DeprecationWarning``.
"""
import warnings

from unlearning.evaluation.muse import KNOWMEM_STOP_STRINGS, knowmem_prompt, knowmem_table, verbmem_table  # noqa: F401
from unlearning.metrics.generation import (cut_at_stop_strings, greedy_continuations, model_max_length,  # noqa: F401
                                           rouge_scores)
from unlearning.metrics.mia import text_mia_scores  # noqa: F401

__all__ = ["KNOWMEM_STOP_STRINGS", "cut_at_stop_strings", "greedy_continuations", "knowmem_prompt", "knowmem_table",
           "model_max_length", "rouge_scores", "text_mia_scores", "verbmem_table"]

warnings.warn("unlearning.metrics.muse is split: verbmem_table / knowmem_table / knowmem_prompt are in "
              "unlearning.evaluation.muse, greedy_continuations / rouge_scores / model_max_length in "
              "unlearning.metrics.generation, text_mia_scores in unlearning.metrics.mia (the old path goes in the "
              "next release)", DeprecationWarning, stacklevel=2)
