"""The command lines of ``unlearning``, one module each, all built from a dataclass by the project's one
parser helper (:func:`geffect.cli.dataclass_parser`, re-exported here)::

    python -m unlearning.train ...           unlearning.cli.train          UnlearningArguments
    python -m unlearning.evaluate ...        unlearning.cli.evaluate       EvaluateArguments
    python -m unlearning.evaluate_muse ...   unlearning.cli.evaluate_muse  EvaluateMuseArguments
    python -m unlearning.evaluate_wmdp ...   unlearning.cli.evaluate_wmdp  EvaluateWmdpArguments
    python -m unlearning.attribute ...       unlearning.cli.attribute      AttributeArguments
    python -m unlearning.finetune ...        unlearning.cli.finetune       FinetuneArguments
    python -m unlearning.replay ...          unlearning.cli.replay         ReplayRunArguments

Each module has ``build_parser()``, ``parse_args(argv)`` and ``main(argv)``; the ``python -m``
names are thin entry points that call ``main``. ``--help`` lists every option with its default.
"""
from geffect.cli import dataclass_parser, parse_dataclass

__all__ = ["dataclass_parser", "parse_dataclass"]
