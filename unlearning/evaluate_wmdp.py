"""``python -m unlearning.evaluate_wmdp``: WMDP hazard accuracy and MMLU-style utility for one model
(:mod:`unlearning.cli.evaluate_wmdp`).

Importing from ``unlearning.evaluate_wmdp`` is deprecated (kept for one release, with a
``DeprecationWarning``): the library is :mod:`unlearning.evaluation` (``evaluate_wmdp``, ...).
"""
__all__ = ["EvaluateWmdpArguments", "build_parser", "evaluate_wmdp", "main", "parse_args", "wmdp_question_sets"]

if __name__ == "__main__":
    from unlearning.cli.evaluate_wmdp import main

    main()
else:
    import warnings

    from unlearning.cli.evaluate_wmdp import EvaluateWmdpArguments, build_parser, main, parse_args  # noqa: F401
    from unlearning.evaluation.wmdp import evaluate_wmdp, wmdp_question_sets  # noqa: F401

    warnings.warn("unlearning.evaluate_wmdp is the `python -m unlearning.evaluate_wmdp` entry point; import the "
                  "library from unlearning.evaluation (evaluate_wmdp, ...) (the old path goes in the next release)",
                  DeprecationWarning, stacklevel=2)
