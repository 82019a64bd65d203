"""The command lines of ``unlearning``, one module each, all built from a dataclass by the project's one
parser helper (:func:`geffect.cli.dataclass_parser`, re-exported here)::

    python -m unlearning.train ...           unlearning.cli.train          UnlearningArguments
    python -m unlearning.evaluate ...        unlearning.cli.evaluate       EvaluateArguments
    python -m unlearning.evaluate_muse ...   unlearning.cli.evaluate_muse  EvaluateMuseArguments
    python -m unlearning.evaluate_wmdp ...   unlearning.cli.evaluate_wmdp  EvaluateWmdpArguments
    python -m unlearning.attribute ...       unlearning.cli.attribute      AttributeArguments
    python -m unlearning.finetune ...        unlearning.cli.finetune       FinetuneArguments
    python -m unlearning.replay ...          unlearning.cli.replay         ReplayRunArguments

Each module has ``build_parser()``, ``parse_args(argv)`` (from one :class:`Command`) and
``main(argv)``; the ``python -m`` names are thin entry points that call ``main``. ``--help``
lists every option with its default.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from geffect.cli import dataclass_parser, parse_dataclass

__all__ = ["Command", "ModelEvaluationArguments", "dataclass_parser", "parse_dataclass", "warn_moved"]


class Command:
    """One command line: its options dataclass, its name and its description (the module docstring's first paragraph).

    ``build_parser`` and ``parse_args`` are what a CLI module exports::

        build_parser, parse_args = Command(EvaluateArguments, "python -m unlearning.evaluate", __doc__).functions
    """

    def __init__(self, arguments: type, prog: str, doc: str | None = None) -> None:
        self.arguments, self.prog = arguments, prog
        self.description = doc.split("\n\n")[0] if doc else None

    def build_parser(self):
        """The ``HfArgumentParser`` of the command (:func:`geffect.cli.dataclass_parser`)."""
        return dataclass_parser(self.arguments, prog=self.prog, description=self.description)

    def parse_args(self, argv: Sequence[str] | None = None) -> Any:
        """The options dataclass from command-line arguments (``sys.argv[1:]`` when None)."""
        return parse_dataclass(self.build_parser(), argv)

    @property
    def functions(self):
        """``(build_parser, parse_args)`` for the module."""
        return self.build_parser, self.parse_args

    @staticmethod
    def log(level: int = logging.INFO) -> None:
        """The command lines' logging format."""
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@dataclass
class ModelEvaluationArguments:
    """The options every one-model evaluation command shares (``evaluate``, ``evaluate_muse``, ``evaluate_wmdp``)."""

    model: str = field(metadata={"help": "Model to evaluate: a Hugging Face causal LM name or a local folder."})
    output_dir: str = field(metadata={"help": "Folder for summary.json and the per-instance tables "
                                              "(per_instance/<name>.<format>)."})
    format: str = field(
        default="parquet", metadata={"help": "File format of the per-instance tables.", "choices": ("parquet", "jsonl")}
    )
    device: str = field(default="cpu", metadata={"help": "Device to load the models on (cpu, cuda, cuda:1, ...)."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, float32, bfloat16, float16."})
    max_samples: int | None = field(default=None, metadata={"help": "Evaluate only the first N items of every set."})

    def __post_init__(self) -> None:
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"--max-samples must be >= 1 (or left out for every item), got {self.max_samples}")

    def load(self, path: str | None = None):
        """(model, tokenizer) of ``path`` (default ``--model``) with ``--dtype`` on ``--device``."""
        from unlearning.models import load_model_and_tokenizer

        return load_model_and_tokenizer(path or self.model, dtype=self.dtype, device=self.device)


def warn_moved(old: str, new: str) -> None:
    """The ``DeprecationWarning`` of an entry-point module imported as a library (``old``: its name, ``new``:
    where its names live now); kept for one release. Attributed to the importer of ``old``."""
    import warnings

    warnings.warn(f"{old} is the `python -m {old}` entry point; import from {new} instead (the old import path goes "
                  "in the next release)", DeprecationWarning, stacklevel=3)
