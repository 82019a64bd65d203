"""``python -m unlearning.attribute``: a WAGLE-style weight mask for a model and a forget split
(:mod:`unlearning.cli.attribute`).

Importing from ``unlearning.attribute`` is deprecated (kept for one release, with a
``DeprecationWarning``): the command line is :mod:`unlearning.cli.attribute`.
"""
__all__ = ["AttributeArguments", "build_parser", "calibration_loaders", "main", "parse_args"]

if __name__ == "__main__":
    from unlearning.cli.attribute import main

    main()
else:
    import warnings

    from unlearning.cli.attribute import (AttributeArguments, build_parser, calibration_loaders, main,  # noqa: F401
                                          parse_args)

    warnings.warn("unlearning.attribute is the `python -m unlearning.attribute` entry point; import from "
                  "unlearning.cli.attribute (the old path goes in the next release)", DeprecationWarning, stacklevel=2)
