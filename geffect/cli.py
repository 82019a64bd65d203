"""Command lines built from dataclasses with :class:`transformers.HfArgumentParser`: the one parser helper.

Every ``python -m`` tool of the project (``geffect.replay``, ``unlearning.*``, ``analyses.*``)
declares its options as one dataclass whose fields carry ``metadata={"help": ...}`` (the TRL
``<method>_config.py`` habit). :func:`dataclass_parser` turns it into a parser whose ``--help``
lists every option with its help text and its default (required options say "required" instead
of "default: None"); both ``--max_length`` and ``--max-length`` spellings are accepted, and a
boolean option that defaults to true also has a ``--no-<name>`` switch. Metadata keys that are
not ``argparse`` arguments (e.g. the study's ``stages``) stay on the field and are not passed
to ``add_argument``.

``transformers`` is imported on use, so ``geffect`` itself does not need it.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import types
from collections.abc import Sequence
from typing import Any

__all__ = ["dataclass_parser", "parse_dataclass"]

# keyword arguments of argparse's add_argument that HfArgumentParser forwards from a field's metadata
_ARGPARSE_KEYS = frozenset({"help", "aliases", "choices", "metavar", "nargs", "type", "required", "default",
                            "action", "const", "dest"})


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except for required options (they have none) and ``--no-*`` switches."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required:
            return f"{action.help} (required)"
        if isinstance(action, argparse._StoreFalseAction):  # HfArgumentParser's complement of a True bool
            return f"Sets --{action.dest.replace('_', '-')} to false."
        return super()._get_help_string(action)


def _parser_class() -> type:
    from transformers import HfArgumentParser

    class DataclassParser(HfArgumentParser):
        """HfArgumentParser that passes only argparse's own metadata keys to ``add_argument``."""

        @staticmethod
        def _parse_dataclass_field(parser, f: dataclasses.Field) -> None:
            if set(f.metadata) - _ARGPARSE_KEYS:
                f = copy.copy(f)
                f.metadata = types.MappingProxyType({k: v for k, v in f.metadata.items() if k in _ARGPARSE_KEYS})
            HfArgumentParser._parse_dataclass_field(parser, f)

    return DataclassParser


def dataclass_parser(dataclass_type: type, *, prog: str, description: str | None = None):
    """An ``HfArgumentParser`` of ``dataclass_type`` for the command ``prog``."""
    return _parser_class()(dataclass_type, prog=prog, description=description, formatter_class=_HelpFormatter)


def parse_dataclass(parser, argv: Sequence[str] | None = None) -> Any:
    """The one dataclass instance ``parser`` builds from ``argv`` (``sys.argv[1:]`` when None)."""
    (args,) = parser.parse_args_into_dataclasses(args=None if argv is None else list(argv))
    return args
