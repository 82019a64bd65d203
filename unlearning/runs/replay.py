"""Replay the G-effects of a finished ``python -m unlearning.train`` run from its checkpoints.

:func:`resolve_objective` is the ``geffect.objectives`` entry point of this distribution
(``pyproject.toml``), so ``python -m geffect.replay RUN --objective satimp`` knows every
objective name of :mod:`unlearning.objectives` without ``geffect`` importing ``unlearning``.
:func:`replay_run` reads what it needs from the run itself (``run_config.json``: objective and
hyper-parameters, initial and reference model; the tracker folder: probe sets and the
micro-batches of every tracked step) and calls :func:`geffect.replay.replay`::

    from unlearning.runs import replay_run
    record = replay_run("runs/npo", pg_effect="batch")   # checkpoint-S -> step S + 1, + step 1
    record.table()                                        # same columns as live tracking

Reproducing the live values at a step S needs the micro-batches of S (tracked runs store them,
``--geffect-record-batches``, on by default) and the weights before update S: a checkpoint at
step S - 1 (``--save-strategy steps --save-steps k --save-total-limit`` none with
``--geffect-every k``), or the initial model for S = 1.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geffect.replay import replay
from geffect.tracker import GEffectRecord
from unlearning import objectives
from unlearning.runs.folder import REFERENCE_COPY, RunFolder

__all__ = ["REFERENCE_COPY", "replay_run", "resolve_objective"]


def resolve_objective(name: str, **hparams: Any):
    """``unlearning.objectives.get(name, **hparams)`` (an unknown name raises ``ValueError`` listing the valid ones)."""
    return objectives.get(name, **hparams)


def replay_run(
    run_dir: str | Path,
    *,
    steps: Sequence[int] | None = None,
    pg_effect: str | None = None,
    output_dir: str | Path | None = None,
    initial_model: str | Path | None = None,
    device: str = "cpu",
    **kwargs: Any,
) -> GEffectRecord:
    """Replay a run of :func:`unlearning.training.run_unlearning` from its ``run_config.json`` and checkpoints.

    The objective is rebuilt from the recorded method and hyper-parameters; step 1 is replayed
    from the initial model (``run_config["model"]``, or ``initial_model``); the reference model
    is a frozen copy of the initial model or the recorded ``--ref-model``. Other keyword
    arguments go to :func:`geffect.replay.replay` (``batches``, ``probes``, ``engine``, ...).
    """
    run_dir = Path(run_dir)
    config_path = RunFolder(run_dir).run_config
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: replay_run reads runs of unlearning.train; for another "
                                "trainer's run call geffect.replay.replay with the objective")
    config = json.loads(config_path.read_text())
    objective = config.get("objective") or {"name": config["method"], "hparams": {}}
    initial = initial_model if initial_model is not None else config.get("model")
    ref = config.get("ref_model")
    reference = None if ref is None else ("initial" if ref == REFERENCE_COPY else ref)
    return replay(run_dir, resolve_objective(objective["name"], **objective.get("hparams", {})),
                  initial_model=initial, ref_model=reference, steps=steps, pg_effect=pg_effect,
                  output_dir=output_dir, device=device, **kwargs)
