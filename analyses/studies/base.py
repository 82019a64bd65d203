"""What a benchmark gives the study: data, default models, evaluation, metrics, the sanity gate.

:class:`analyses.pipeline.Study` runs the same stages on every benchmark (models -> references
-> masks -> sanity gate -> one unlearning run per method -> tidy frames -> report). Everything
that differs between TOFU, MUSE and WMDP sits behind the :class:`Benchmark` interface:

========================  ==================================================================
piece                     what it is
========================  ==================================================================
``config_class``          the dataclass of the benchmark's CLI (fields declare their stages)
``prepare_default_models``the small default target / retain models trained on the benchmark's
                          own data (cached), used when ``--model`` is not given
``unlearning_kwargs`` /   how ``unlearning.train.run_unlearning`` gets its data: TOFU rows
``run_kwargs``            through a ``DataSource``, raw text as ready chunk datasets
``examples``              forget / retain items for WAGLE calibration and token attributions
``evaluate``              one model's evaluation written as ``EvalResult`` (``summary.json``)
``trajectory_callback``   the same evaluation at checkpoints of a run (``eval/history.jsonl``)
``summary_keys`` ...      metrics-table and trajectory columns, and the summary keys behind them
``axes``                  the forget / utility metrics trade-offs and matched utility are read on
``gate``                  the sanity gate on the target's and retain model's summaries
``findings``              the keys of the findings that apply (``None``: all of them)
========================  ==================================================================
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from transformers import TrainerCallback

from analyses.config import BaseStudyConfig
from analyses.gate import Gate
from analyses.methods import MethodSpec
from unlearning.hooks import EVAL_DIR, EVAL_HISTORY_FILE, append_jsonl

logger = logging.getLogger(__name__)

__all__ = ["Axes", "Benchmark", "StepEvalCallback", "numeric_summary"]


@dataclass(frozen=True)
class Axes:
    """The two metrics a benchmark's trade-off is read on, and their names in the report.

    ``forget``: lower = more forgotten (TOFU forget ES, MUSE VerbMem, WMDP hazard accuracy);
    ``retain``: higher = more kept (TOFU retain ES, MUSE KnowMem on retain, WMDP utility
    accuracy). Matched utility (:func:`analyses.findings.matched_point`) compares methods where
    ``retain`` falls to ``--utility-budget`` times the target's. ``side`` is drawn over steps in
    the trajectory figure's right panel.
    """

    forget: str = "forget_es"
    retain: str = "retain_es"
    forget_name: str = "forget ES"
    retain_name: str = "retain ES"
    side: str | None = "model_utility"
    side_name: str = "model utility"

    def finding_labels(self) -> dict[str, str]:
        """Keyword arguments of :func:`analyses.findings.compute_findings`."""
        return {"forget": self.forget, "retain": self.retain, "forget_name": self.forget_name,
                "retain_name": self.retain_name}

    def trajectory_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`analyses.plots.trajectory.plot`."""
        return {"x": self.forget, "y": self.retain, "x_name": self.forget_name, "y_name": self.retain_name,
                "side": self.side, "side_name": self.side_name}


def numeric_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The flat numeric and string entries of an evaluation summary (what history lines keep)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


class StepEvalCallback(TrainerCallback):
    """Evaluate at chosen optimizer steps of an unlearning run with a benchmark's own evaluation.

    ``evaluate(model, tokenizer, out_dir) -> summary`` runs at every step of ``at_steps`` (in
    eval mode, the training mode restored afterwards) and writes into
    ``<output_dir>/eval/step-<N>/``; one line per evaluation (``step`` + the numeric summary)
    goes to ``<output_dir>/eval/history.jsonl`` -- the layout of ``unlearning.hooks.EvalCallback``,
    so :func:`analyses.frames.trajectory_frame` reads both. Single process.
    """

    def __init__(self, evaluate: Callable[[Any, Any, Path], Mapping[str, Any]], tokenizer, at_steps: Sequence[int],
                 log_keys: Sequence[str] | None = None):
        self.evaluate = evaluate
        self.tokenizer = tokenizer
        self.at_steps = {int(s) for s in at_steps}
        self.log_keys = list(log_keys) if log_keys is not None else None
        self._last_step = -1

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step not in self.at_steps or step == self._last_step or model is None:
            return
        self._last_step = step
        root = Path(args.output_dir) / EVAL_DIR
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                summary = dict(self.evaluate(model, self.tokenizer, root / f"step-{step}"))
        finally:
            model.train(was_training)
        append_jsonl(root / EVAL_HISTORY_FILE, [{**numeric_summary(summary), "step": int(step),
                                                 "epoch": float(state.epoch or 0.0)}])
        logger.info("step %d: %s", step, {k: round(v, 4) for k, v in summary.items() if isinstance(v, float)
                                          and (self.log_keys is None or k in self.log_keys)})


class Benchmark:
    """The interface :class:`analyses.pipeline.Study` runs a benchmark through (see the module docstring).

    Subclasses set the class attributes and implement the methods that raise
    ``NotImplementedError``; the others have defaults that suit every benchmark.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[BaseStudyConfig]] = BaseStudyConfig
    title: ClassVar[str] = "G-effect study of LLM unlearning objectives"
    #: metrics-table column -> evaluation summary key (``analyses.frames.metric_row``)
    summary_keys: ClassVar[dict[str, str]] = {}
    #: the metrics table's columns in order (``method``, ``reference``, summary columns, run info)
    metric_columns: ClassVar[list[str]] = []
    #: trajectory column -> evaluation summary key (``analyses.frames.trajectory_frame``)
    trajectory_keys: ClassVar[dict[str, str]] = {}
    #: values a reference model's row gets where its own summary has none, e.g. the retain
    #: model's forget quality against itself (1.0)
    reference_fill: ClassVar[dict[str, dict[str, float]]] = {}
    axes: ClassVar[Axes] = Axes()
    #: keys of the findings that apply to the benchmark (None: every finding)
    findings: ClassVar[tuple[str, ...] | None] = None
    #: the benchmark's own methods (on top of ``analyses.methods.METHODS``)
    methods: ClassVar[dict[str, MethodSpec]] = {}
    #: report sections whose caption the benchmark words itself: section name -> caption
    captions: ClassVar[dict[str, str]] = {}
    #: keyword arguments of ``analyses.plots.tradeoff.plot`` (its panels; None: TOFU's)
    tradeoff: ClassVar[dict[str, Any] | None] = None

    def __init__(self, config: BaseStudyConfig):
        if not isinstance(config, self.config_class):
            raise TypeError(f"the {self.name} benchmark needs a {self.config_class.__name__}, got "
                            f"{type(config).__name__}")
        self.config = config

    # ---- data and models ----------------------------------------------------------------------
    def describe(self) -> str:
        """The data in words, for the report's introduction."""
        raise NotImplementedError

    def source_dict(self) -> dict[str, Any]:
        """A JSON-able description of the data (part of the models stage key and the report)."""
        raise NotImplementedError

    def prepare_default_models(self) -> tuple[dict[str, str | None], dict[str, Any]]:
        """Build (or reuse) the default target / retain models: ``({"target", "retain"} paths, report)``."""
        raise NotImplementedError

    def unlearning_kwargs(self) -> dict[str, Any]:
        """Fields of ``UnlearningArguments`` the benchmark sets (data, split, holdout, ...)."""
        return {}

    def run_kwargs(self, tokenizer, model, objective) -> dict[str, Any]:
        """Keyword arguments of ``run_unlearning`` that give it the data (``data=`` or ``datasets=``)."""
        raise NotImplementedError

    def method_overrides(self, name: str, spec: MethodSpec, model) -> dict[str, Any]:
        """``UnlearningArguments`` overrides of one method that depend on the loaded model."""
        return {}

    def examples(self, tokenizer, model, which: str, n: int | None) -> list[dict[str, torch.Tensor]]:
        """The first ``n`` forget (``which="forget"``) or retain items, as the trainer sees them."""
        raise NotImplementedError

    def n_forget_items(self, tokenizer, model) -> int:
        """Training items of the forget set (optimizer steps per epoch follow from it)."""
        raise NotImplementedError

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(self, model, tokenizer, out_dir: Path, retain_reference: Path | None = None, *,
                 role: str = "model") -> dict[str, Any]:
        """Evaluate ``model`` and save the ``EvalResult`` in ``out_dir``; returns its summary.

        ``retain_reference``: the retain model's evaluation folder, for metrics relative to it
        (TOFU forget quality, MUSE PrivLeak); ``None`` when there is none, and for the retain
        model itself (``role="retain"``; other roles: ``"target"``, ``"model"``).
        """
        raise NotImplementedError

    def trajectory_callback(self, tokenizer, at_steps: Sequence[int], retain_reference: Path | None):
        """A Trainer callback that evaluates at ``at_steps`` and writes ``eval/history.jsonl``."""
        return StepEvalCallback(lambda m, t, out: self.evaluate(m, t, out, retain_reference), tokenizer, at_steps,
                                log_keys=list(self.trajectory_keys.values()))

    def gate(self, target: Mapping[str, Any], retain: Mapping[str, Any] | None) -> Gate:
        """The sanity gate on the target's and (if any) the retain model's evaluation summaries."""
        raise NotImplementedError

    def plot_options(self) -> dict[str, dict[str, Any]]:
        """Keyword arguments of the report's plots, by section name (``analyses.report.build_sections``)."""
        options = {"trajectory": self.axes.trajectory_kwargs()}
        if self.tradeoff is not None:
            options["tradeoff"] = dict(self.tradeoff)
        return options

    # ---- extras -------------------------------------------------------------------------------
    def reference_extras(self, model, tokenizer, folder: Path) -> None:
        """Anything the references stage writes beside the two evaluations (TOFU: truncation counts)."""

    def notes(self, paths: Mapping[str, str | None]) -> list[str]:
        """The benchmark's caveats for the report (next to the findings); ``paths``: the study's models."""
        return []

    def summary_extras(self) -> dict[str, Any]:
        """Entries the benchmark adds to ``summary.json``."""
        return {}

    #: unlearning learning rate on the benchmark's small default model (None: the study's)
    default_model_lr: ClassVar[float | None] = None

    def learning_rate(self, default_model_lr: float) -> float | None:
        """The unlearning learning rate: ``--learning-rate``, else the benchmark's (or ``default_model_lr``) on
        the default model, else the unlearning default for pre-trained models (``None``)."""
        c = self.config
        own = self.default_model_lr if self.default_model_lr is not None else default_model_lr
        return c.learning_rate if c.learning_rate is not None else (own if c.model is None else None)


def read_summary(folder: Path | None) -> dict[str, Any] | None:
    """``folder/summary.json`` as a dict, or None when there is none."""
    if folder is None or not (Path(folder) / "summary.json").is_file():
        return None
    return json.loads((Path(folder) / "summary.json").read_text())


def total_steps(n_items: int, config: BaseStudyConfig) -> int:
    """Optimizer steps of one unlearning run over ``n_items`` forget items (the Trainer's count, one process)."""
    if config.max_steps > 0:
        return config.max_steps
    per_epoch = max(math.ceil(n_items / config.per_device_train_batch_size) // config.gradient_accumulation_steps, 1)
    return math.ceil(config.num_train_epochs * per_epoch)
