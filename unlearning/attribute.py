"""``python -m unlearning.attribute``: a WAGLE-style weight mask for a model and a forget split
(:mod:`unlearning.cli.attribute`).

Importing from ``unlearning.attribute`` is deprecated (kept for one release, with a
``DeprecationWarning``): the command line is :mod:`unlearning.cli.attribute`.
"""
from unlearning.cli import warn_moved
from unlearning.cli.attribute import AttributeArguments, build_parser, calibration_loaders, main, parse_args  # noqa: F401

__all__ = ["AttributeArguments", "build_parser", "calibration_loaders", "main", "parse_args"]

if __name__ == "__main__":
    main()
else:
    warn_moved(__name__, "unlearning.cli.attribute")
