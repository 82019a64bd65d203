"""Training: the run's arguments, the trainer, and one unlearning run.

- :mod:`unlearning.training.config`: :class:`UnlearningArguments` (``TrainingArguments`` plus the
  objective, data, model, mask and G-effect settings; every field a CLI flag).
- :mod:`unlearning.training.trainer`: :class:`UnlearningTrainer`, a ``transformers.Trainer`` whose
  loss is a registered objective.
- :mod:`unlearning.training.run`: :func:`run_unlearning` (data, model, callbacks, train,
  ``run_config.json``) and its parts.

The command line is ``python -m unlearning.train`` (:mod:`unlearning.cli.train`).
"""
from unlearning.training.config import DEFAULT_LR_PRETRAINED, DEFAULT_LR_TINY, OBJECTIVE_HPARAMS, UnlearningArguments
from unlearning.training.run import RunResult, build_datasets, freeze_except, holdout_retain_rows, run_unlearning
from unlearning.training.trainer import StepRecord, UnlearningTrainer

__all__ = ["DEFAULT_LR_PRETRAINED", "DEFAULT_LR_TINY", "OBJECTIVE_HPARAMS", "RunResult", "StepRecord",
           "UnlearningArguments", "UnlearningTrainer", "build_datasets", "freeze_except", "holdout_retain_rows",
           "run_unlearning"]
