"""Configuration of an unlearning run: :class:`UnlearningArguments`.

A dataclass on :class:`transformers.TrainingArguments` (the TRL ``<method>_config.py`` habit):
every field carries ``metadata["help"]`` so the project's parser helper
(:func:`geffect.cli.dataclass_parser`, an ``HfArgumentParser``) builds the CLI of
``python -m unlearning.train`` from it (both ``--learning_rate`` and ``--learning-rate`` are
accepted), and ``__post_init__`` validates before anything is loaded. The flat ``geffect_*``
fields are the command line's view of one :class:`geffect.GEffectConfig`
(:attr:`UnlearningArguments.geffect_config`), which is what the run passes on.

Defaults differ from ``TrainingArguments`` where unlearning wants something else: short runs
logged every step, warmup, no weight decay (so masked weights really stay fixed), gradient
clipping at 1.0, no column pruning (batches are nested ``{"forget", "retain", "idk"}``
dicts), no external reporters. ``learning_rate`` defaults to ``None`` and is resolved to
:data:`DEFAULT_LR_PRETRAINED` when ``--model`` names a model and to
:data:`DEFAULT_LR_TINY` for the small embedded default model (see docs/training.md for the
experiment behind that choice).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainingArguments

from geffect import GEffectConfig
from geffect.tracker import PG_INSTANCES
from unlearning import objectives
from unlearning.data import DataSource, retain_split_for
from unlearning.objectives.retain import RETAIN_LOSSES

__all__ = ["DEFAULT_LR_PRETRAINED", "DEFAULT_LR_TINY", "OBJECTIVE_HPARAMS", "UnlearningArguments"]

#: Learning rate for real pre-trained models (Phi-1.5 / Llama-2-7B TOFU setups use 1e-5..2e-5).
DEFAULT_LR_PRETRAINED = 1e-5
#: Learning rate for the small default model built by ``unlearning.models.prepare_default_models``.
DEFAULT_LR_TINY = 1e-4

#: Objective hyper-parameters forwarded to ``unlearning.objectives.get`` when set (not None).
OBJECTIVE_HPARAMS = (
    "beta",
    "beta1",
    "beta2",
    "alpha",
    "fraction",
    "granularity",
    "retain_loss",
    "retain_weight",
    "forget_weight",
)


@dataclass
class UnlearningArguments(TrainingArguments):
    """Arguments of one unlearning run (objective, data, model, analysis hooks + HF training args)."""

    # --- what to unlearn, with what ---
    method: str = field(
        default="satimp",
        metadata={"help": "Unlearning objective, a name from unlearning.objectives.available() (e.g. ga, satimp, npo)."},
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "Model to unlearn: a Hugging Face name or a local folder. Default: the small embedded "
            "default model fine-tuned on --data (built and cached by unlearning.models.prepare_default_models)."
        },
    )
    data: str = field(
        default="embedded",
        metadata={"help": "Data source: 'embedded' (offline default benchmark), 'locuslab/TOFU' or a local TOFU-style folder."},
    )
    split: str = field(default="forget10", metadata={"help": "Forget split, e.g. forget01 / forget05 / forget10."})
    max_authors: int | None = field(
        default=None,
        metadata={"help": "Keep the forget authors plus retain authors up to this many in total (unlearning.data.DataSource); "
                  "default: all."},
    )
    retain_split: str | None = field(
        default=None,
        metadata={"help": "Retain split paired with the forget split. Default: derived (forget10 -> retain90)."},
    )
    retain_holdout: str = field(
        default="eval",
        metadata={"help": "Rows the retain term never trains on: 'eval' drops the retain rows the evaluation measures "
                  "(TOFU's retain_perturbed, the first 400 rows of full; the SatImp and G-effect protocol), "
                  "'none' trains the retain term on every retain row."},
    )
    retain_holdout_rows: int | None = field(
        default=None,
        metadata={"help": "With --retain-holdout eval: hold out only the first N rows of retain_perturbed (the ones an "
                  "evaluation with --subset N measures); default: all of them."},
    )
    max_length: int = field(default=512, metadata={"help": "Maximum tokens of prompt + answer (longer rows are truncated)."})
    shuffle: bool = field(
        default=True,
        metadata={
            "help": "Shuffle the forget set every epoch (seeded). --shuffle false keeps the data order fixed, "
            "e.g. to compare single-process and multi-process runs step by step."
        },
    )

    # --- objective hyper-parameters (None = the objective's own default) ---
    beta: float | None = field(default=None, metadata={"help": "Objective beta (WGA/SimSat/SimImp power, NPO/SimNPO/TNPO temperature, top-k fraction)."})
    beta1: float | None = field(default=None, metadata={"help": "SatImp saturation power beta1 (w = p^beta1 (1-p)^beta2)."})
    beta2: float | None = field(default=None, metadata={"help": "SatImp importance power beta2."})
    alpha: float | None = field(default=None, metadata={"help": "Extra power of WTNPO / SimNPO delta, as the objective defines it."})
    fraction: float | None = field(default=None, metadata={"help": "Token fraction kept by topk / bottomk / random hard sampling."})
    granularity: str | None = field(default=None, metadata={"help": "Weight granularity: token, instance, group or batch."})
    retain_loss: str | None = field(default=None, metadata={"help": "Retain term: none, nll or kl (None = objective default)."})
    retain_weight: float | None = field(default=None, metadata={"help": "Weight of the retain term in the total loss."})
    forget_weight: float | None = field(default=None, metadata={"help": "Weight of the forget term in the total loss."})
    objective_kwargs: str | None = field(
        default=None,
        metadata={"help": "Further objective hyper-parameters as a JSON object, e.g. '{\"layer\": 7, \"coeff\": 2.0}'."},
    )
    ref_model: str | None = field(
        default=None,
        metadata={
            "help": "Reference model for objectives that need one (NPO, TNPO, KL retain...): a name/path. "
            "Default: a frozen copy of the model at the start of unlearning. Not loaded otherwise."
        },
    )

    trainable: str | None = field(
        default=None,
        metadata={
            "help": "Regular expression: train only parameters whose name matches it (re.search), freeze "
            "the rest - e.g. RMU's 'layers\\.[5-7]\\.mlp'. Default: train everything."
        },
    )

    # --- weight mask (WAGLE) ---
    mask: str | None = field(
        default=None,
        metadata={"help": "Weight mask file (geffect.masking.load_mask): only the weights it keeps are unlearned. WAGLE's "
                  "order: the full gradient is clipped, then the gradients of masked-out weights are zeroed."},
    )

    # --- analysis hooks ---
    track_geffect: bool = field(
        default=False,
        metadata={"help": "Track the G-effect of the real training gradient on fixed forget/retain probe sets."},
    )
    geffect_every: int = field(default=1, metadata={"help": "Track the G-effect at optimizer steps 1, 1+k, 1+2k, ..."})
    geffect_probe_size: int = field(
        default=16, metadata={"help": "Probe set size: the first N rows of the forget split and of the retain split."}
    )
    pg_effect: bool = field(
        default=False, metadata={"help": "With --track-geffect, also record PG-effects (Wang et al. 2025, Eq. 5)."}
    )
    geffect_groups: str = field(
        default="layers",
        metadata={"help": "Parameter groups of the tracked G-effects: 'layers' (embed, layer.i, final_norm, lm_head) or "
                  "'modules' (every layer split into layer.i.attn / .mlp / .norm; sums give the layers)."},
    )
    pg_instances: str = field(
        default="batch",
        metadata={"help": "Whose PG-effects --pg-effect records: 'batch' (the forget instances of each tracked step) "
                  "or 'probe' (the fixed forget-probe instances, comparable across steps)."},
    )
    probe_weights: bool = field(
        default=False,
        metadata={"help": "With --track-geffect, record the objective's token and instance weights on the forget probe "
                  "at every tracked step (analysis/geffect/probe_*_weights step tables)."},
    )
    geffect_rows_per_pass: int | None = field(
        default=None,
        metadata={"help": "With --track-geffect, at most this many probe rows per tracking forward/backward (default: "
                  "all of a process's rows at once). Same values; lower it when the tracking pass does not fit in "
                  "memory beside the training step (1B-8B models)."},
    )
    geffect_record_batches: bool = field(
        default=True,
        metadata={"help": "With --track-geffect, store each tracked step's micro-batches and the probe sets "
                  "(analysis/geffect/batches_step_*.pt, probes.pt) so that `python -m geffect.replay` can recompute "
                  "the step from a checkpoint."},
    )
    log_token_weights: bool = field(
        default=True,
        metadata={"help": "Log token-weight distributions and weight-vs-likelihood tables under output_dir/analysis/."},
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Resume from the last checkpoint in --output-dir (same as --resume-from-checkpoint LAST)."},
    )

    # --- TrainingArguments defaults overridden for unlearning ---
    learning_rate: float | None = field(
        default=None,
        metadata={"help": f"Peak learning rate. Default: {DEFAULT_LR_PRETRAINED} with --model, {DEFAULT_LR_TINY} for the default tiny model."},
    )
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs over the forget set."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Forget rows per device per micro-batch."})
    warmup_steps: float = field(
        default=0.2, metadata={"help": "Linear warmup: steps (int >= 1) or a fraction of all steps (float < 1)."}
    )
    weight_decay: float = field(
        default=0.0, metadata={"help": "AdamW weight decay. Keep 0 with --mask: decay would move masked weights."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimizer steps."})
    save_strategy: str = field(
        default="epoch", metadata={"help": "Checkpointing: 'epoch' (default; enables --resume), 'steps' or 'no'."}
    )
    save_total_limit: int | None = field(default=1, metadata={"help": "Keep at most this many checkpoints."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: batches are nested forget/retain dicts."}
    )
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Reporting integrations (default none)."})

    def __post_init__(self) -> None:
        if self.output_dir is None:
            raise ValueError("output_dir is required: pass --output-dir DIR (the run writes its model and tables there)")
        methods = objectives.available()
        if self.method not in methods:
            raise ValueError(f"unknown method {self.method!r}; valid methods: {', '.join(sorted(methods))}")
        if self.retain_loss is not None and self.retain_loss not in RETAIN_LOSSES:
            raise ValueError(f"unknown retain_loss {self.retain_loss!r}; valid: {', '.join(RETAIN_LOSSES)}")
        try:
            self.geffect_config  # noqa: B018 - validates the G-effect settings, once, in GEffectConfig
        except ValueError as err:
            raise ValueError(f"G-effect tracking (--geffect-every, --geffect-probe-size, --geffect-groups, "
                             f"--pg-instances, --geffect-rows-per-pass): {err}") from err
        if self.pg_instances not in PG_INSTANCES:  # checked even while --pg-effect is off
            raise ValueError(f"pg_instances must be 'batch' or 'probe', got {self.pg_instances!r}")
        if self.retain_holdout not in ("eval", "none"):
            raise ValueError(f"retain_holdout must be 'eval' or 'none', got {self.retain_holdout!r}")
        if self.probe_weights and not self.track_geffect:
            raise ValueError("--probe-weights needs --track-geffect (the weights are recorded at the tracked steps)")
        if self.pg_effect and not self.track_geffect:
            raise ValueError("--pg-effect needs --track-geffect (PG-effects are computed by the G-effect tracker)")
        if self.max_length < 8:
            raise ValueError(f"max_length={self.max_length} is too short for a question and an answer")
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns must be False: unlearning batches are nested forget/retain dicts")
        if self.objective_kwargs:
            parsed = json.loads(self.objective_kwargs) if isinstance(self.objective_kwargs, str) else self.objective_kwargs
            if not isinstance(parsed, dict):
                raise ValueError(f"objective_kwargs must be a JSON object, got {self.objective_kwargs!r}")
        if self.mask is not None and not os.path.exists(self.mask):
            raise FileNotFoundError(f"mask file {self.mask!r} does not exist; build one with geffect's weight_mask / attribution CLI")
        if self.trainable is not None:
            try:
                re.compile(self.trainable)
            except re.error as err:
                raise ValueError(f"--trainable {self.trainable!r} is not a valid regular expression: {err}") from err
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LR_PRETRAINED if self.model else DEFAULT_LR_TINY
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not torch.cuda.is_available():  # CPU multi-process (torchrun on a laptop / CI)
                if self.ddp_backend is None:
                    self.ddp_backend = "gloo"
                # accelerate counts a CPU launch as distributed only with cpu=True; without it every
                # process would train alone (and --fsdp stops with "only works in distributed training")
                self.use_cpu = True
        super().__post_init__()

    @property
    def geffect_config(self) -> GEffectConfig:
        """The G-effect tracking settings of ``--track-geffect`` as one :class:`geffect.GEffectConfig`."""
        return GEffectConfig(every=self.geffect_every, probe_size=self.geffect_probe_size, groups=self.geffect_groups,
                             pg_effect=self.pg_instances if self.pg_effect else False, probe_weights=self.probe_weights,
                             rows_per_pass=self.geffect_rows_per_pass, record_batches=self.geffect_record_batches)

    def objective_hparams(self) -> dict[str, Any]:
        """Hyper-parameters to pass to ``unlearning.objectives.get`` (only those explicitly set)."""
        hp = {name: getattr(self, name) for name in OBJECTIVE_HPARAMS if getattr(self, name) is not None}
        if self.objective_kwargs:
            extra = json.loads(self.objective_kwargs) if isinstance(self.objective_kwargs, str) else dict(self.objective_kwargs)
            hp.update(extra)
        return hp

    def data_source(self):
        """The ``unlearning.data.DataSource`` of ``--data`` / ``--max-authors`` / ``--split``."""
        return DataSource(self.data, max_authors=self.max_authors, forget_split=self.split)

    def resolved_retain_split(self) -> str:
        """The retain split: ``retain_split`` if set, else derived from the forget split."""
        if self.retain_split:
            return self.retain_split
        return retain_split_for(self.split)
