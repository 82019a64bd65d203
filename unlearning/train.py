"""``python -m unlearning.train``: unlearn a forget split with one method (:mod:`unlearning.cli.train`).

Importing from ``unlearning.train`` is deprecated (kept for one release, with a
``DeprecationWarning``): the library is :mod:`unlearning.training` (``UnlearningArguments``,
``run_unlearning``, ``RunResult``, ...), the command line :mod:`unlearning.cli.train`.
"""
from unlearning.cli import warn_moved
from unlearning.cli.train import build_parser, main, parse_args  # noqa: F401
from unlearning.objectives import refusal_objectives
from unlearning.runs.folder import RUN_CONFIG_FILE  # noqa: F401
from unlearning.training import (RunResult, UnlearningArguments, build_datasets, freeze_except,  # noqa: F401
                                 holdout_retain_rows, run_unlearning)

__all__ = ["IDK_METHODS", "RUN_CONFIG_FILE", "RunResult", "UnlearningArguments", "build_datasets", "build_parser",
           "freeze_except", "holdout_retain_rows", "main", "parse_args", "run_unlearning"]

#: deprecated: the registered objectives that train on refusal answers (``objectives.needs_refusal``)
IDK_METHODS = refusal_objectives()

if __name__ == "__main__":
    main()
else:
    warn_moved(__name__, "unlearning.training (run_unlearning, UnlearningArguments, ...) and unlearning.cli.train")
