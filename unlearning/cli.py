"""Command lines built from dataclasses with :class:`transformers.HfArgumentParser`.

Each ``python -m unlearning.<tool>`` declares its options as one dataclass whose fields carry
``metadata={"help": ...}`` (the TRL ``<method>_config.py`` habit). :func:`dataclass_parser`
turns it into a parser whose ``--help`` lists every option with its help text and its default
(required options say "required" instead of "default: None"); both ``--max_length`` and
``--max-length`` spellings are accepted, and a boolean option that defaults to true also has
a ``--no-<name>`` switch.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from transformers import HfArgumentParser

__all__ = ["dataclass_parser", "parse_dataclass"]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except for required options (they have none) and ``--no-*`` switches."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required:
            return f"{action.help} (required)"
        if isinstance(action, argparse._StoreFalseAction):  # HfArgumentParser's complement of a True bool
            return f"Sets --{action.dest.replace('_', '-')} to false."
        return super()._get_help_string(action)


def dataclass_parser(dataclass_type: type, *, prog: str, description: str | None = None) -> HfArgumentParser:
    """An ``HfArgumentParser`` of ``dataclass_type`` for the command ``prog``."""
    return HfArgumentParser(dataclass_type, prog=prog, description=description, formatter_class=_HelpFormatter)


def parse_dataclass(parser: HfArgumentParser, argv: Sequence[str] | None = None) -> Any:
    """The one dataclass instance ``parser`` builds from ``argv`` (``sys.argv[1:]`` when None)."""
    (args,) = parser.parse_args_into_dataclasses(args=None if argv is None else list(argv))
    return args
