"""Command lines built from dataclasses: the project's one parser helper lives in :mod:`geffect.cli`."""
from geffect.cli import dataclass_parser, parse_dataclass

__all__ = ["dataclass_parser", "parse_dataclass"]
