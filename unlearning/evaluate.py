"""``python -m unlearning.evaluate``: the TOFU metric suite for one model (:mod:`unlearning.cli.evaluate`).

Importing from ``unlearning.evaluate`` is deprecated (kept for one release, with a
``DeprecationWarning``): the library is :mod:`unlearning.evaluation` (``evaluate_model``,
``TofuEvalConfig``, ``EvalResult``, ...), the command line :mod:`unlearning.cli.evaluate`.
"""
__all__ = ["ALL_SETS", "EvalResult", "EvaluateArguments", "TofuEvalConfig", "build_parser", "compute_tables",
           "evaluate_model", "load_eval_sets", "load_retain_stats", "main", "parse_args", "summarize"]

if __name__ == "__main__":
    from unlearning.cli.evaluate import main

    main()
else:
    import warnings

    from unlearning.cli.evaluate import EvaluateArguments, build_parser, main, parse_args  # noqa: F401
    from unlearning.evaluation import (ALL_SETS, EvalResult, TofuEvalConfig, compute_tables, evaluate_model,  # noqa: F401
                                       load_eval_sets, load_retain_stats, summarize)

    warnings.warn("unlearning.evaluate is the `python -m unlearning.evaluate` entry point; import the library from "
                  "unlearning.evaluation (evaluate_model, EvalResult, ...) and unlearning.cli.evaluate "
                  "(the old path goes in the next release)", DeprecationWarning, stacklevel=2)
