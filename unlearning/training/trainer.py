"""UnlearningTrainer: a ``transformers.Trainer`` whose loss is a registered unlearning objective.

The trainer adds exactly five things to :class:`transformers.Trainer`:

1. ``compute_loss`` calls ``objective(model, {"forget", "retain", "idk"}, ref_model)``
   (``unlearning.objectives``); a non-finite loss raises :class:`FloatingPointError` naming the
   method and the step.
2. A reference model - a frozen copy of the initial model or one loaded from a path - exists only
   when ``objective.needs_reference``; it lives on the training device in eval mode.
3. Weight masks and G-effects through the same public callbacks any Trainer can use
   (:mod:`unlearning.callbacks`): ``weight_mask`` adds a :class:`WeightMaskCallback`
   (clip the full gradient, then zero the masked entries, at ``on_pre_optimizer_step``), and
   every callback with a ``bind`` method (:class:`GEffectCallback`) is bound to the trainer
   when added, so it can read the step's micro-batches, weight masks, ``objective`` and
   ``ref_model``.
4. FSDP2 on CPU: accelerate enables FSDP only for accelerator devices (on a CPU launch it
   silently trains with DDP); the trainer switches a CPU launch that asks for FSDP2 (``--fsdp``
   with ``--fsdp_config '{"fsdp_version": 2}'``, or ``accelerate launch`` with an FSDP config,
   e.g. ``configs/accelerate/fsdp2_cpu.yaml``) to FSDP2 over gloo, for tests and laptops.
5. Extra metrics (``loss/forget``, ``loss/retain``, ``weights/mean``, ...) are buffered per
   micro-batch, averaged over the logging window and across processes in :meth:`log`.

Run:  python -m unlearning.train --method satimp --output-dir runs/satimp
"""
from __future__ import annotations

import copy
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import SequentialSampler
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from transformers import Trainer

from geffect.losses import answer_mask
from unlearning.callbacks.weight_mask import WeightMaskCallback

logger = logging.getLogger(__name__)

__all__ = ["StepRecord", "UnlearningTrainer"]


@dataclass
class StepRecord:
    """What one micro-batch of the current optimizer step left for the analysis hooks (CPU, detached)."""

    token_weights: torch.Tensor | None  # (B, T) forget token weights, zero off answer tokens
    token_logprobs: torch.Tensor | None  # (B, T) forget token log-probs
    answer_mask: torch.Tensor | None  # (B, T) bool
    instance_weights: torch.Tensor | None  # (B,)


def _detach_cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().float().cpu()


def _fsdp2_on_cpu(trainer: Trainer) -> None:
    """Turn a multi-process CPU (gloo) launch that asks for FSDP into FSDP2.

    ``accelerate`` sets ``DistributedType.FSDP`` only for accelerator devices; for
    ``MULTI_CPU`` it drops the FSDP plugin and the model is wrapped in DDP. torch's FSDP2
    (``fully_shard``) runs on CPU with gloo, so the plugin the Trainer built from ``--fsdp`` /
    ``--fsdp_config`` (or the one ``accelerate launch`` describes in ``ACCELERATE_USE_FSDP`` /
    ``FSDP_*`` variables) is installed in the accelerator state before the model is prepared.
    """
    state = trainer.accelerator.state
    from_args = trainer.args.fsdp_plugin_args is not None
    from_env = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if state.distributed_type != DistributedType.MULTI_CPU or not (from_args or from_env):
        return
    plugin = FullyShardedDataParallelPlugin(**trainer.args.fsdp_plugin_args) if from_args else FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError("FSDP on CPU needs FSDP2: pass --fsdp_config '{\"fsdp_version\": 2}' (or fsdp_version: 2 in "
                         "the accelerate config)")
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.is_fsdp_enabled = True
    logger.info("FSDP2 on CPU over %s: %d processes", state.backend, state.num_processes)


class UnlearningTrainer(Trainer):
    """Trainer for unlearning objectives.

    Args:
        model: the model to unlearn.
        args: :class:`unlearning.training.UnlearningArguments` (any ``TrainingArguments`` works).
        objective: an ``unlearning.objectives.Objective`` (callable with ``needs_reference``).
        ref_model: a reference model, or a name/path to load, or None (= frozen copy of
            ``model`` when the objective needs one). Ignored when it does not.
        weight_mask: dict parameter name -> bool tensor (True = may change), a mask file, or None;
            applied by a :class:`WeightMaskCallback` after clipping (WAGLE's order).
        train_dataset / data_collator / processing_class / callbacks: as in ``Trainer``;
            the dataset yields ``{"forget", "retain", "idk"}`` items
            (``unlearning.data.ForgetRetainDataset`` + ``ForgetRetainCollator``).
    """

    def __init__(
        self,
        model: nn.Module,
        args,
        *,
        objective,
        ref_model: nn.Module | str | None = None,
        weight_mask: dict[str, torch.Tensor] | str | None = None,
        **kwargs: Any,
    ):
        super().__init__(model=model, args=args, **kwargs)
        self.objective = objective
        # Our loss is a plain mean per micro-batch: let Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.ref_model = self._build_reference(ref_model) if getattr(objective, "needs_reference", False) else None
        if ref_model is not None and self.ref_model is None:
            logger.info("method %s needs no reference model; not loading %s", self._method, ref_model)
        self.weight_mask = weight_mask
        if weight_mask is not None:
            self.add_callback(WeightMaskCallback(weight_mask))  # warns on weight decay at on_train_begin
        self.last_output = None  # the last ObjectiveOutput (training micro-batches only)
        self.last_inputs = None  # ... and the {"forget", "retain", "idk"} micro-batch it came from
        self.step_records: list[StepRecord] = []  # micro-batches of the current optimizer step
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._main_process_metrics: dict[str, float] = {}  # rank-0-only values (G-effects), not reduced
        self._records_step = -1
        for cb in list(self.callback_handler.callbacks):  # those passed as callbacks=[...]
            self._bind(cb)

    def _bind(self, callback) -> None:
        bind = getattr(callback, "bind", None)
        if callable(bind):
            bind(self)

    def add_callback(self, callback):
        """``Trainer.add_callback``, then bind the callback to this trainer if it has ``bind``."""
        super().add_callback(callback)
        if hasattr(self, "step_records"):  # not during Trainer.__init__ (its own callbacks have no bind)
            self._bind(self.callback_handler.callbacks[-1])

    # ------------------------------------------------------------------ setup
    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        _fsdp2_on_cpu(self)

    @property
    def _method(self) -> str:
        return getattr(self.objective, "name", type(self.objective).__name__)

    def _build_reference(self, ref_model: nn.Module | str | None) -> nn.Module:
        if ref_model is None:
            ref = copy.deepcopy(self.accelerator.unwrap_model(self.model))
            source = "a frozen copy of the initial model"
        elif isinstance(ref_model, str):
            from unlearning.models import load_model

            dtype = next(self.model.parameters()).dtype
            ref = load_model(ref_model, dtype=dtype)
            source = ref_model
        else:
            ref = ref_model
            source = type(ref_model).__name__
        ref.to(self.args.device)
        ref.eval()
        ref.requires_grad_(False)
        logger.info("method %s: reference model = %s", self._method, source)
        return ref

    def _get_train_sampler(self, train_dataset=None):
        if not getattr(self.args, "shuffle", True):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return SequentialSampler(dataset)  # accelerate shards it across processes in order
        return super()._get_train_sampler(train_dataset)

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self.objective(model, inputs, ref_model=self.ref_model)
        loss = out.loss
        if not bool(torch.isfinite(loss.detach()).all()):
            raise FloatingPointError(
                f"non-finite loss {loss.detach().float().item()} for method {self._method!r} at optimizer step "
                f"{self.state.global_step + 1}; lower --learning-rate, check the objective's hyper-parameters "
                "(beta, retain_weight) or train in float32"
            )
        if model.training:
            self._record(out, inputs)
        return (loss, out) if return_outputs else loss

    def _record(self, out, inputs: dict[str, Any]) -> None:
        """Keep the output for hooks and buffer the scalar metrics of one training micro-batch."""
        if self._records_step != self.state.global_step:  # first micro-batch of a new optimizer step
            self.step_records = []
            self._records_step = self.state.global_step
        self.last_output = out
        self.last_inputs = inputs
        forget = inputs.get("forget")
        mask = getattr(out, "answer_mask", None)
        if mask is None and forget is not None:
            mask = answer_mask(forget["labels"])
        self.step_records.append(
            StepRecord(
                token_weights=_detach_cpu(getattr(out, "token_weights", None)),
                token_logprobs=_detach_cpu(getattr(out, "token_logprobs", None)),
                answer_mask=None if mask is None else mask.detach().bool().cpu(),
                instance_weights=_detach_cpu(getattr(out, "instance_weights", None)),
            )
        )
        self._metrics["loss/total"].append(float(out.loss.detach()))
        for key, attr in (("loss/forget", "forget_loss"), ("loss/retain", "retain_loss")):
            value = getattr(out, attr, None)
            if value is not None:
                self._metrics[key].append(float(value.detach()))
        w = getattr(out, "token_weights", None)
        if w is not None and mask is not None and bool(mask.any()):
            self._metrics["weights/mean"].append(float(w.detach()[mask.to(w.device)].float().mean()))
        iw = getattr(out, "instance_weights", None)
        if iw is not None and iw.numel():
            self._metrics["weights/instance_mean"].append(float(iw.detach().float().mean()))

    def log_main_process_metrics(self, metrics: dict[str, float]) -> None:
        """Add values known on the main process only (e.g. G-effects) to the next log row."""
        self._main_process_metrics.update(metrics)

    # ------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._metrics and "loss" in logs:  # a training log row: flush the buffered window
            keys = sorted(self._metrics)
            local = torch.tensor(
                [sum(self._metrics[k]) / len(self._metrics[k]) if self._metrics[k] else math.nan for k in keys],
                dtype=torch.float64,
            )
            if self.accelerator.num_processes > 1:
                local = self.accelerator.reduce(local.to(self.args.device), reduction="mean").cpu()
            logs.update({k: float(v) for k, v in zip(keys, local.tolist())})
            self._metrics.clear()
        if self._main_process_metrics and "loss" in logs:  # latest value of the window (e.g. geffect/*)
            logs.update(self._main_process_metrics)
            self._main_process_metrics = {}
        super().log(logs, start_time)

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """Count the FLOPs of every sub-batch (Trainer only looks for a top-level ``input_ids``)."""
        return sum(
            super(UnlearningTrainer, self).floating_point_ops(sub)
            for sub in inputs.values()
            if isinstance(sub, dict)
        )
