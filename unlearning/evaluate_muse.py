"""``python -m unlearning.evaluate_muse``: MUSE's VerbMem, KnowMem and PrivLeak for one model
(:mod:`unlearning.cli.evaluate_muse`).

Importing from ``unlearning.evaluate_muse`` is deprecated (kept for one release, with a
``DeprecationWarning``): the library is :mod:`unlearning.evaluation` (``evaluate_muse``, ...).
"""
from unlearning.cli import warn_moved
from unlearning.cli.evaluate_muse import EvaluateMuseArguments, build_parser, main, parse_args  # noqa: F401
from unlearning.evaluation.muse import MUSE_METRICS, MUSE_RETRAIN_AUC, evaluate_muse, privleak_reference  # noqa: F401

__all__ = ["EvaluateMuseArguments", "MUSE_METRICS", "MUSE_RETRAIN_AUC", "build_parser", "evaluate_muse", "main",
           "parse_args", "privleak_reference"]

if __name__ == "__main__":
    main()
else:
    warn_moved(__name__, "unlearning.evaluation (evaluate_muse, ...) and unlearning.cli.evaluate_muse")
