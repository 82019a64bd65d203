"""``python -m unlearning.evaluate``: the TOFU metric suite for one model (:mod:`unlearning.cli.evaluate`).

Importing from ``unlearning.evaluate`` is deprecated (kept for one release, with a
``DeprecationWarning``): the library is :mod:`unlearning.evaluation` (``evaluate_model``,
``TofuEvalConfig``, ``EvalResult``, ...), the command line :mod:`unlearning.cli.evaluate`.
"""
from unlearning.cli import warn_moved
from unlearning.cli.evaluate import EvaluateArguments, build_parser, main, parse_args  # noqa: F401
from unlearning.evaluation import (ALL_SETS, EvalResult, TofuEvalConfig, compute_tables,  # noqa: F401
                                   evaluate_model, load_eval_sets, load_retain_stats, summarize)

__all__ = ["ALL_SETS", "EvalResult", "EvaluateArguments", "TofuEvalConfig", "build_parser", "compute_tables",
           "evaluate_model", "load_eval_sets", "load_retain_stats", "main", "parse_args", "summarize"]

if __name__ == "__main__":
    main()
else:
    warn_moved(__name__, "unlearning.evaluation (evaluate_model, EvalResult, ...) and unlearning.cli.evaluate")
