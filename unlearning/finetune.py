"""``python -m unlearning.finetune``: fine-tune a causal LM on QA data, or build the default models
(:mod:`unlearning.cli.finetune`).

Importing from ``unlearning.finetune`` is deprecated (kept for one release, with a
``DeprecationWarning``): the training loop is :func:`unlearning.models.fine_tune`, the command
line :mod:`unlearning.cli.finetune`.
"""
from unlearning.cli import warn_moved
from unlearning.cli.finetune import FinetuneArguments, build_parser, main, parse_args  # noqa: F401
from unlearning.models import fine_tune, make_dataset  # noqa: F401

__all__ = ["FinetuneArguments", "build_parser", "fine_tune", "main", "make_dataset", "parse_args"]

if __name__ == "__main__":
    import sys

    sys.exit(main())
else:
    warn_moved(__name__, "unlearning.models (fine_tune, make_dataset) and unlearning.cli.finetune")
