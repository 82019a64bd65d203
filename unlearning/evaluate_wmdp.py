"""``python -m unlearning.evaluate_wmdp``: WMDP hazard accuracy and MMLU-style utility for one model
(:mod:`unlearning.cli.evaluate_wmdp`).

Importing from ``unlearning.evaluate_wmdp`` is deprecated (kept for one release, with a
``DeprecationWarning``): the library is :mod:`unlearning.evaluation` (``evaluate_wmdp``, ...).
"""
from unlearning.cli import warn_moved
from unlearning.cli.evaluate_wmdp import EvaluateWmdpArguments, build_parser, main, parse_args  # noqa: F401
from unlearning.evaluation.wmdp import evaluate_wmdp, wmdp_question_sets  # noqa: F401

__all__ = ["EvaluateWmdpArguments", "build_parser", "evaluate_wmdp", "main", "parse_args", "wmdp_question_sets"]

if __name__ == "__main__":
    main()
else:
    warn_moved(__name__, "unlearning.evaluation (evaluate_wmdp, ...) and unlearning.cli.evaluate_wmdp")
