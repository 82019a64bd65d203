"""``python -m unlearning.replay``: replay the G-effects of a finished run from its checkpoints
(:mod:`unlearning.cli.replay`).

Importing from ``unlearning.replay`` is deprecated (kept for one release, with a
``DeprecationWarning``): the library is :mod:`unlearning.runs` (``replay_run``,
``resolve_objective``, the ``geffect.objectives`` entry point).
"""
from unlearning.cli import warn_moved
from unlearning.cli.replay import ReplayRunArguments, build_parser, main, parse_args  # noqa: F401
from unlearning.runs.replay import REFERENCE_COPY, replay_run, resolve_objective  # noqa: F401

__all__ = ["REFERENCE_COPY", "ReplayRunArguments", "build_parser", "main", "parse_args", "replay_run",
           "resolve_objective"]

if __name__ == "__main__":
    main()
else:
    warn_moved(__name__, "unlearning.runs (replay_run, resolve_objective) and unlearning.cli.replay")
