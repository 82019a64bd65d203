"""The study's configuration: one dataclass gives the CLI, the defaults and every cache key.

Each field of :class:`StudyConfig` declares, in ``metadata["stages"]``, which cached stages
of the study it changes (``()`` for fields that change no result, like ``output_dir``). A
stage's key is a hash of the values of its declared fields, the stage version and the keys of
the stages upstream of it (:func:`stage_key`), so changing ``--max-length`` re-runs the
references, masks and methods, and a new field cannot be added without saying what it
affects (``tests/analyses/test_pipeline.py`` fails otherwise). ``metadata["help"]`` is the
``--help`` text of ``python -m analyses tofu`` (built by :func:`geffect.cli.dataclass_parser`).

The knobs the study hands to each unlearning run carry the names of
:class:`unlearning.config.UnlearningArguments` (``learning_rate``, ``num_train_epochs``,
``max_steps``, ``per_device_train_batch_size``, ``gradient_accumulation_steps``,
``geffect_every``, ``geffect_probe_size``, ``pg_effect``, ...: :data:`UNLEARNING_FIELDS`), so
``--learning-rate 1e-3`` means the same in ``python -m analyses tofu`` and
``python -m unlearning.train``. Their old study spellings (``--lr``, ``--epochs``, ``--steps``,
``--batch-size``, ``--grad-accum``, ``--probe-size``, ``--pg-effects``) still parse, with a
``FutureWarning``, until the next release (:data:`RENAMED`).

:class:`BaseStudyConfig` holds the fields every benchmark's study has; :class:`StudyConfig`
(TOFU) adds its own, as ``analyses.studies.muse.MuseStudyConfig`` and
``analyses.studies.wmdp.WmdpStudyConfig`` do (a subclass may re-declare a field to change its
default or help). Each class carries its ``--quick`` preset as ``QUICK``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from geffect.cli import dataclass_parser, parse_dataclass
from geffect.io import dumps

__all__ = ["BaseStudyConfig", "COMPUTE", "DEFAULT_METHODS", "QUICK", "RENAMED", "STAGES", "StudyConfig",
           "UNLEARNING_FIELDS", "parse_study_args", "stage_fields", "stage_key", "study_field"]

#: The cached stages in order, and the stages whose keys each one's key includes.
STAGES: dict[str, tuple[str, ...]] = {
    "models": (),
    "references": ("models",),
    "masks": ("models",),
    "methods": ("models", "references", "masks"),
}
#: Bump when a stage's outputs change meaning (invalidates every cached stage).
STUDY_VERSION = 2
DEFAULT_METHODS = ("ga", "gd", "npo", "wga", "tnpo", "simsat", "simimp", "satimp", "wagle_gd", "random_gd")
COMPUTE = ("references", "masks", "methods")  # stages that run a model
FULL_METHODS = ("satimp_instance", "satimp_group", "satimp_batch")
#: Study fields that are fields of ``unlearning.config.UnlearningArguments`` with the same name and
#: meaning: every unlearning run of the study gets them as they are (``learning_rate`` too, once the
#: benchmark has resolved its default: ``analyses.studies.base.Benchmark.learning_rate``).
UNLEARNING_FIELDS = ("num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                     "geffect_every", "geffect_probe_size", "pg_effect", "max_length", "seed", "bf16")
#: Old study option -> its ``UnlearningArguments`` name; the old spellings parse, with a warning,
#: until the next release (``--lr`` and ``--lr=...``, ``--batch-size`` and ``--batch_size``, ...).
RENAMED = {"lr": "learning_rate", "epochs": "num_train_epochs", "steps": "max_steps",
           "batch_size": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps",
           "probe_size": "geffect_probe_size", "pg_effects": "pg_effect"}


def _spellings(name: str) -> list[str]:
    """The command-line spellings of a field name, as ``HfArgumentParser`` accepts them."""
    return [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])


def study_field(default: Any, help: str, stages: Sequence[str], *, renamed_from: str | None = None,
                **kw: Any) -> Any:
    """A config field with its ``--help`` text and the cached stages it affects (``metadata``).

    ``renamed_from``: the field's old study name; its spellings become argparse ``aliases``.
    """
    meta: dict[str, Any] = {"help": help, "stages": tuple(stages)}
    if renamed_from is not None:
        if renamed_from not in RENAMED:
            raise ValueError(f"renamed_from={renamed_from!r} is not an old name of RENAMED ({sorted(RENAMED)})")
        meta["renamed_from"] = renamed_from
        meta["aliases"] = _spellings(renamed_from)
        meta["help"] = f"{help} (Was --{renamed_from.replace('_', '-')}, which still works until the next release.)"
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


_f = study_field


@dataclass
class BaseStudyConfig:
    """The fields every benchmark's study has (each benchmark's config adds its own and sets the defaults).

    ``QUICK`` (a class attribute) is the benchmark's ``--quick`` preset.
    """

    QUICK: ClassVar[dict[str, Any]] = {}

    data: str = _f("embedded", "'embedded' (offline), a local folder in the benchmark's layout, or a hub name.",
                   ["models"])
    model: str | None = _f(None, "Name or path of a model already trained on the data (skips preparing the "
                           "default models).", ["models"])
    retain_model: str | None = _f(None, "Model trained without the forget set (the retain reference); default: "
                                  "the prepared one.", ["models"])
    quick: bool = _f(False, "One-minute smoke run: tiny recipe, few steps, small probes and evaluation.", ["models"])
    methods: list[str] = _f(DEFAULT_METHODS, "Methods to run: registered objectives, wagle_gd (GD restricted to "
                            "the WAGLE mask) or random_gd (GD on a random mask of the same density); space- or "
                            "comma-separated.", [])
    num_train_epochs: float = _f(1.0, "Unlearning epochs over the forget split.", ["methods"], renamed_from="epochs")
    max_steps: int = _f(-1, "Max optimizer steps of each unlearning run; > 0 overrides --num-train-epochs.",
                        ["methods"], renamed_from="steps")
    per_device_train_batch_size: int = _f(4, "Forget rows per micro-batch.", ["methods"], renamed_from="batch_size")
    gradient_accumulation_steps: int = _f(1, "Gradient accumulation steps.", ["methods"], renamed_from="grad_accum")
    learning_rate: float | None = _f(None, "Unlearning learning rate; default 1e-3 on the small default model, the "
                                     "unlearning default for pre-trained models with --model.", ["methods"],
                                     renamed_from="lr")
    geffect_every: int = _f(4, "Track G-effects (and PG-effects, probe weights) every k optimizer steps.",
                            ["methods"])
    geffect_probe_size: int = _f(12, "Forget and retain probe instances for G-effects.", ["methods"],
                                 renamed_from="probe_size")
    pg_effect: bool = _f(True, "Record PG-effects of the forget-probe instances.", ["methods"],
                         renamed_from="pg_effects")
    trajectory_points: int = _f(5, "Evaluations along each unlearning run (evenly spaced, the last at the end), for "
                                "the trade-off curves.", ["methods"])
    utility_budget: float = _f(0.9, "Matched-utility comparison: forget ES where retain ES falls to this fraction of "
                               "the target's (interpolated along the trajectory).", [])
    allow_failed_gate: bool = _f(False, "Run the unlearning stages even when the sanity gate fails (the report still "
                                 "says so at the top and skips the findings that depend on it).", [])
    eval_subset: int | None = _f(40, "Evaluate the first N rows of each set (0 = all).", ["references", "methods"])
    eval_batch_size: int = _f(16, "Evaluation batch size.", ["references", "methods"])
    max_length: int = _f(256, "Max tokens of prompt + answer; longer rows keep their answer (prompt cut from the "
                         "left) and are counted in the report.", COMPUTE)
    wagle_density: float = _f(0.5, "Fraction of weights wagle_gd updates.", ["masks"])
    wagle_calibration: int = _f(32, "Forget and retain rows the WAGLE scores are computed on.", ["masks"])
    attribution_examples: int = _f(3, "Forget answers whose token attributions are shown.", ["references", "methods"])
    attribution_steps: int = _f(16, "Integrated-gradients steps of the token attributions.", ["references", "methods"])
    device: str | None = _f(None, "cpu, cuda, cuda:1 ... (default: cuda if available).", COMPUTE)
    bf16: bool = _f(False, "Load and train the models in bfloat16.", COMPUTE)
    seed: int = _f(0, "Seed of unlearning, data order and the random mask.", ["masks", "methods"])
    output_dir: str = _f("outputs/geffect_study", "Study folder (cached stages, data, figures, report).", [])
    cache_dir: str | None = _f(None, "Default-model cache (default $GEFFECT_CACHE or ~/.cache/geffect-unlearning).",
                               [])
    png: bool = _f(True, "Also export the figures as PNG (needs Chromium for kaleido).", [])
    progress: bool = _f(True, "Show progress bars.", [])

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        self.methods = [m.strip() for item in self.methods for m in str(item).split(",") if m.strip()]
        self.extend_methods()
        if not self.methods:
            raise ValueError("--methods is empty; name at least one method, e.g. --methods ga satimp")
        if self.eval_subset == 0:
            self.eval_subset = None
        for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "geffect_every",
                     "geffect_probe_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.trajectory_points < 1:
            raise ValueError(f"--trajectory-points must be >= 1, got {self.trajectory_points}")
        if not 0 < self.utility_budget <= 1:
            raise ValueError(f"--utility-budget must be in (0, 1], got {self.utility_budget}")
        if not 0 < self.wagle_density <= 1:
            raise ValueError(f"--wagle-density must be in (0, 1], got {self.wagle_density}")

    def extend_methods(self) -> None:
        """Hook of the benchmark configs: methods that flags add (TOFU's ``--full``)."""

    @classmethod
    def quick_config(cls, **overrides: Any) -> "BaseStudyConfig":
        """The ``--quick`` smoke run (the class's ``QUICK`` preset) with ``overrides`` on top."""
        return cls(**{**cls.QUICK, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The ``--quick`` preset of the TOFU study: tiny recipe, few steps, small probes and evaluation.
QUICK: dict[str, Any] = dict(quick=True, max_steps=3, trajectory_points=3, num_train_epochs=1.0,
                             per_device_train_batch_size=4, geffect_every=1, geffect_probe_size=4, eval_subset=4,
                             max_new_tokens=8, wagle_calibration=8, attribution_examples=2, attribution_steps=4,
                             max_length=128)


@dataclass
class StudyConfig(BaseStudyConfig):
    """The TOFU study (``python -m analyses tofu``; the defaults are the tuned 2-core CPU study)."""

    QUICK: ClassVar[dict[str, Any]] = QUICK

    data: str = _f("embedded", "'embedded' (offline), a local TOFU folder, or a hub name such as locuslab/TOFU.",
                   ["models"])
    model: str | None = _f(None, "Name or path of a model already fine-tuned on the data (skips preparing the "
                           "default models).", ["models"])
    retain_model: str | None = _f(None, "Model fine-tuned on the retain split only (forget quality); default: the "
                                  "prepared one.", ["models"])
    output_dir: str = _f("outputs/geffect_tofu", "Study folder (cached stages, data, figures, report).", [])
    split: str = _f("forget10", "Forget split (forget01 / forget05 / forget10).", ["models"])
    max_authors: int | None = _f(None, "Keep the forget authors plus retain authors up to N in total (models, "
                                 "unlearning and evaluation all see that subset); default: all.", ["models"])
    full: bool = _f(False, "Also run SatImp's granularity ablation (satimp_instance, satimp_group, satimp_batch: "
                    "the SatImp weight at instance / group / batch granularity).", [])
    retain_holdout: str = _f("eval", "'eval': the retain term never trains on the retain rows the evaluation measures "
                             "(SatImp / G-effect protocol); 'none': it trains on all retain rows.", ["methods"])
    gate_es_gap: float = _f(0.25, "Sanity gate: the target's forget ES must exceed the retain model's by at least "
                            "this much (the target memorised what the retain model never saw).", [])
    gate_min_es: float = _f(0.5, "Sanity gate: minimum forget ES of the target.", [])
    gate_prob_ratio: float = _f(2.0, "Sanity gate: the target's forget probability must be at least this multiple of "
                                "the retain model's.", [])
    max_new_tokens: int = _f(32, "Generation length for ROUGE-L.", ["references", "methods"])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")

    def extend_methods(self) -> None:
        if self.full:
            self.methods += [m for m in FULL_METHODS if m not in self.methods]


def stage_fields(stage: str, config_class: type = StudyConfig) -> list[str]:
    """Names of the fields of ``config_class`` that declare ``stage``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {list(STAGES)}")
    return [f.name for f in dataclasses.fields(config_class) if stage in f.metadata["stages"]]


def stage_key(config: BaseStudyConfig, stage: str, upstream: dict[str, str], **extra: Any) -> str:
    """The cache key of ``stage``: its declared fields, the upstream stages' keys and ``extra``."""
    missing = [s for s in STAGES[stage] if s not in upstream]
    if missing:
        raise ValueError(f"stage {stage!r} needs the keys of {missing} first")
    payload = {"version": STUDY_VERSION, "stage": stage,
               "fields": {name: getattr(config, name) for name in stage_fields(stage, type(config))},
               "upstream": {s: upstream[s] for s in STAGES[stage]}, "extra": extra}
    return hashlib.sha256(dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _old_spellings(config_class: type) -> dict[str, str]:
    """Old option spelling (``--no-`` switches included) -> the field it sets now."""
    return {spelling: f.name for f in dataclasses.fields(config_class) if "renamed_from" in f.metadata
            for old in (f.metadata["renamed_from"], "no_" + f.metadata["renamed_from"]) for spelling in _spellings(old)}


def study_parser(config_class: type = StudyConfig, *, prog: str = "python -m analyses tofu",
                 description: str | None = None):
    """The command line of a study (:func:`geffect.cli.dataclass_parser` of ``config_class``).

    A boolean field that defaults to true and has an old spelling also keeps that spelling's
    ``--no-`` switch (``--no-pg-effects``).
    """
    parser = dataclass_parser(config_class, prog=prog, description=description)
    for f in dataclasses.fields(config_class):
        if f.default is True and "renamed_from" in f.metadata:
            parser.add_argument(*_spellings("no_" + f.metadata["renamed_from"]), action="store_false", dest=f.name)
    return parser


def parse_study_args(argv: Sequence[str] | None = None, *, prog: str = "python -m analyses tofu",
                     description: str | None = None, config_class: type = StudyConfig) -> BaseStudyConfig:
    """A ``config_class`` from command-line arguments (``--quick`` sets the class's ``QUICK`` preset as defaults).

    An old option spelling (:data:`RENAMED`) sets its field and warns (``FutureWarning``).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = study_parser(config_class, prog=prog, description=description)
    old = _old_spellings(config_class)
    for flag in (arg.split("=", 1)[0] for arg in argv):
        name = old.get(flag)
        if name is not None:
            warnings.warn(f"{flag} is the old spelling of --{name.replace('_', '-')} (the unlearning runs' name); "
                          "it goes in the next release", FutureWarning, stacklevel=2)
    if "--quick" in argv or any(a.startswith("--quick=") and a.split("=", 1)[1].lower() in ("1", "true", "yes")
                                for a in argv):
        parser.set_defaults(**{k: v for k, v in config_class.QUICK.items() if k != "quick"})
    return parse_dataclass(parser, argv)
