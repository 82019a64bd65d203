"""G-effects and weight masks for any ``transformers.Trainer``, through its public callback events.

    trainer.add_callback(WeightMaskCallback("masks/wagle-0.8.safetensors"))    # WAGLE: clip, then mask
    trainer.add_callback(GEffectCallback(probes, every=4, output_dir="runs/x"))  # G-effects of the real step

Both callbacks work on the accumulated gradient of an optimizer step at the Trainer's
``on_pre_optimizer_step`` event (after the last micro-batch's backward and the all-reduce,
before ``optimizer.step()``), for any ``Trainer`` subclass, single process, DDP or FSDP2.

**The pre-clip gradient.** Trainer clips the gradient *before* ``on_pre_optimizer_step``, with
``torch.nn.utils.clip_grad_norm_`` (``Trainer._clip_grad_norm`` -> ``Accelerator.clip_grad_norm_``
-> ``clip_grad_norm_(model.parameters(), max_grad_norm)`` for one process, DDP and FSDP2), which
multiplies every gradient by the scalar ``c = min(1, max_norm / (N + 1e-6))``, N the global
2-norm. Undoing it after the fact needs N, which the Trainer keeps in a local variable; it
cannot be recovered from the clipped gradient either: when clipping is active its norm is
``max_norm * N / (N + 1e-6)``, so ``N = 1e-6 * M / (max_norm - M)`` divides by a difference of
order 1e-6 / N (for N = 5, max_norm = 1 a relative error of 1e-8 in M gives 5 % in N). So on a
step it tracks, :class:`GEffectCallback` *holds the clipping back*: at ``on_step_begin`` it sets
``args.max_grad_norm = 0`` (the Trainer then only measures the norm, which it logs as
``grad_norm`` as before), and at ``on_pre_optimizer_step`` it measures N on the unmasked
gradient, applies the weight masks, reads the gradient (the exact pre-clip direction, masked),
then scales the gradient by c with ``torch.nn.utils.clip_grads_with_norm_`` and restores
``args.max_grad_norm``. ``clip_grad_norm_`` is exactly ``get_total_norm`` followed by
``clip_grads_with_norm_``, and masking commutes with a scalar factor, so the optimizer receives
the same bits as without the callback (tested). Untracked steps are left to the Trainer.

**Masks** (:class:`WeightMaskCallback`): WAGLE's order (Jia et al., NeurIPS 2024;
OPTML-Group/WAGLE): clip the full gradient, then zero the masked entries. At
``on_pre_optimizer_step`` the Trainer has clipped already, so the callback only masks; on a
step the G-effect callback holds the clipping for, the norm is measured before any mask is
applied. The masks of every :class:`WeightMaskCallback` of a trainer are applied by whichever of
these callbacks runs first, so the G-effect always reads ``mask ⊙ pre-clip gradient`` whatever
order the callbacks were added in.

Limits: DeepSpeed clips inside its engine and keeps gradients out of ``.grad`` (not supported);
FSDP1 flattens parameters (use FSDP2, ``--fsdp_config '{"fsdp_version": 2}'``); a Trainer
subclass that overrides ``_clip_grad_norm`` is bypassed on tracked steps (the callback clips
with torch's function, which is what Trainer's own implementation calls).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from geffect import GEffectTracker
from geffect.batches import concat_batches
from geffect.distributed import full_tensor, gather_objects, is_distributed, is_dtensor, is_sharded, reshard
from geffect.engine import model_logits
from geffect.losses import answer_mask, token_logprobs
from geffect.masking import Mask, check_mask, load_mask

logger = logging.getLogger(__name__)

__all__ = ["ANALYSIS_DIR", "GEffectCallback", "PROBE_INSTANCE_WEIGHTS", "PROBE_TOKEN_WEIGHTS", "StepGradients",
           "WeightMaskCallback", "concat_batches", "step_gradients"]

ANALYSIS_DIR = "analysis"
#: step tables the G-effect callback stores beside the G-effects (``GEffectRecord.step_table``)
PROBE_TOKEN_WEIGHTS = "probe_token_weights"
PROBE_INSTANCE_WEIGHTS = "probe_instance_weights"


# ---------------------------------------------------------------------------- shared step state
class StepGradients:
    """One trainer's gradient between the last backward of an optimizer step and ``optimizer.step()``.

    Shared by the callbacks of that trainer (:func:`step_gradients` keys it by the
    ``TrainingArguments`` object every event receives). It holds the clipping of a step back
    (:meth:`hold_clipping`), measures the pre-clip norm before any mask (:meth:`measure`),
    applies the registered masks once per step (:meth:`apply_masks`) and clips
    (:meth:`release`).
    """

    def __init__(self) -> None:
        self.held_max_norm: float | None = None  # args.max_grad_norm held back for this step
        self.norm: torch.Tensor | None = None  # pre-clip global 2-norm of the held step
        self.masks: list[Mask] = []
        self._masked_step = -1
        self.last_norm: float | None = None  # the last held step's pre-clip norm and clip factor
        self.last_clip_coef: float | None = None

    def hold_clipping(self, args) -> None:
        """Stop the Trainer from clipping this step (``args.max_grad_norm = 0`` until :meth:`release`)."""
        if self.held_max_norm is None and args.max_grad_norm is not None and args.max_grad_norm > 0:
            self.held_max_norm = float(args.max_grad_norm)
            args.max_grad_norm = 0.0
            self.norm = None

    @staticmethod
    def _grads(model: nn.Module) -> list[torch.Tensor]:
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        meshes = {g.device_mesh for g in grads if is_dtensor(g)}
        if len(meshes) + any(not is_dtensor(g) for g in grads) > 1:  # several meshes, or DTensors and plain
            raise NotImplementedError("gradients on several device meshes (tensor + data parallel) are not supported; "
                                      "clip them with Trainer's own clipping (do not track G-effects) or use FSDP2 alone")
        return grads

    def measure(self, model: nn.Module) -> None:
        """Measure the pre-clip norm of a held step (before masks; a collective under FSDP2)."""
        if self.held_max_norm is not None and self.norm is None:
            self.norm = _total_norm(self._grads(model))

    def apply_masks(self, model: nn.Module, step: int) -> None:
        """Zero the masked gradient entries of every registered mask (once per optimizer step)."""
        if not self.masks or self._masked_step == step:
            return
        self.measure(model)  # the clip norm is taken on the unmasked gradient
        for mask in self.masks:
            _apply_mask(model, mask)
        self._masked_step = step

    def release(self, args, model: nn.Module) -> None:
        """Clip a held step (factor from the pre-clip norm) and give ``max_grad_norm`` back to the Trainer."""
        if self.held_max_norm is None:
            return
        max_norm = self.held_max_norm
        args.max_grad_norm = max_norm
        self.held_max_norm = None
        norm = self.norm if self.norm is not None else _total_norm(self._grads(model))
        self.norm = None
        _clip_with_norm(model.parameters(), max_norm, norm)
        value = float(full_tensor(norm))
        self.last_norm = value
        self.last_clip_coef = min(1.0, max_norm / (value + 1e-6))

    def restore(self, args) -> None:
        """Give ``max_grad_norm`` back without clipping (end of a step that never reached the optimizer)."""
        if self.held_max_norm is not None:
            args.max_grad_norm = self.held_max_norm
            self.held_max_norm = None
            self.norm = None

    def pre_clip_norm(self) -> float | None:
        """The measured pre-clip norm of the held step (None if nothing is held)."""
        return None if self.norm is None else float(full_tensor(self.norm))


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The global 2-norm exactly as ``torch.nn.utils.clip_grad_norm_`` computes it."""
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: the function clip_grad_norm_ calls
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))  # older torch


def _clip_with_norm(params, max_norm: float, norm: torch.Tensor) -> None:
    """Scale the gradients by ``min(1, max_norm / (norm + 1e-6))`` (torch's clipping factor)."""
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):  # torch >= 2.6
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad.mul_(coef.to(p.grad.device))


_STATES: dict[int, StepGradients] = {}


def step_gradients(args) -> StepGradients:
    """The :class:`StepGradients` shared by the callbacks of the trainer that owns ``args``."""
    key = id(args)
    state = _STATES.get(key)
    if state is None:
        state = _STATES[key] = StepGradients()
        weakref.finalize(args, _STATES.pop, key, None)
    return state


@torch.no_grad()
def _apply_mask(model: nn.Module, mask: Mask) -> None:
    for name, p in model.named_parameters():
        m = mask.get(name)
        if m is None or p.grad is None:
            continue
        p.grad.masked_fill_(m.logical_not(), 0)


@contextlib.contextmanager
def _timed(into: dict[str, float], name: str):
    """Record ``name`` (wall seconds) and ``name_cpu`` (this process's CPU seconds) of the block."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        into[name] = time.perf_counter() - wall
        into[f"{name}_cpu"] = time.process_time() - cpu


def _check_backend(args, model: nn.Module | None, what: str) -> None:
    if getattr(args, "deepspeed", None):
        raise NotImplementedError(f"{what} does not support DeepSpeed: it clips inside its engine and keeps gradients "
                                  "out of .grad; use DDP or FSDP2 (--fsdp with --fsdp_config '{\"fsdp_version\": 2}')")
    if model is not None:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            raise NotImplementedError(f"{what} does not support FSDP1 (flattened parameters); use FSDP2: "
                                      "--fsdp_config '{\"fsdp_version\": 2}'")


# ---------------------------------------------------------------------------- weight masks
class WeightMaskCallback(TrainerCallback):
    """Unlearn only the weights of a mask (WAGLE): zero masked gradients after clipping, before the step.

    Args:
        mask: ``{parameter name: bool tensor}`` (True = may change) or a file written by
            :func:`geffect.masking.save_mask` (e.g. by ``python -m unlearning.attribute``).
            Names are those of the model's ``named_parameters()``; parameters absent from the
            mask stay fully trainable.
        strict: a trainable parameter missing from the mask is an error.

    AdamW's decoupled weight decay still shrinks masked weights (by lr·wd·θ per step); with
    ``weight_decay=0`` they stay bit-identical (Adam's moments of an always-zero gradient are 0,
    so the update is exactly 0). The callback warns when decay is on. Under FSDP2 the mask is
    sharded like each parameter once, at ``on_train_begin``.
    """

    def __init__(self, mask: Mask | str | os.PathLike, *, strict: bool = False):
        self.source = mask
        self.strict = strict
        self.mask: Mask | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        _check_backend(args, model, "WeightMaskCallback")
        mask = load_mask(self.source) if isinstance(self.source, (str, os.PathLike)) else dict(self.source)
        check_mask(mask, model, strict=self.strict)
        params = dict(model.named_parameters())
        self.mask = {n: _place_like(m, params[n]) for n, m in mask.items()}
        if args.weight_decay and args.weight_decay > 0:
            logger.warning("weight_decay=%g with a weight mask: AdamW's decoupled decay still shrinks masked weights; "
                           "use weight_decay=0 to keep them fixed", args.weight_decay)
        registry = step_gradients(args).masks
        if not any(m is self.mask for m in registry):
            registry.append(self.mask)
        kept = sum(int(full_tensor(m).sum()) for m in self.mask.values())
        total = sum(m.numel() for m in self.mask.values())
        logger.info("weight mask: %d of %d weights (%.2f%%) may change", kept, total, 100 * kept / max(total, 1))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step_gradients(args).apply_masks(model, state.global_step + 1)

    def on_train_end(self, args, state, control, **kwargs):
        registry = step_gradients(args).masks
        registry[:] = [m for m in registry if m is not self.mask]


def _place_like(mask: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The bool mask on the parameter's device; a DTensor with its placements under FSDP2."""
    if is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(mask.to(param.to_local().device), param.device_mesh, param.placements)
    return mask.to(param.device)


# ---------------------------------------------------------------------------- G-effects
class GEffectCallback(TrainerCallback):
    """Track the G-effect of the real training gradient on fixed probe sets, for any Trainer.

    At optimizer steps 1, 1 + every, 1 + 2·every, ... the callback reads the accumulated
    gradient at ``on_pre_optimizer_step`` — after the last micro-batch's backward and the
    all-reduce, with the weight masks applied, **before clipping** (the module docstring says
    how) — at the weights θ_s the gradient was taken at, and writes through one
    ``geffect.GEffectTracker`` under ``<output_dir>/analysis/geffect/``:

    - G-effects E[i, g] = <grad R(x_i), grad> for every probe instance i and parameter group g
      (``GEffectRecord.table()``); ``geffect/forget``, ``geffect/retain``, ... go to the logs;
    - PG-effects (Wang et al. 2025, Eq. 5; ``GEffectRecord.pg_table()``), with ``pg_effect``:
      ``"batch"`` (or True) for the unlearning instances of the step's micro-batches (all
      processes), ``"probe"`` for the fixed forget-probe instances (trajectories over steps);
    - with ``probe_weights``, the weights the objective (and its reference model) puts on the
      forget-probe answer tokens and instances, as step tables ``probe_token_weights`` (step,
      instance, token, likelihood, weight) and ``probe_instance_weights`` (step, instance,
      weight, kind) (``GEffectRecord.step_table``);
    - with ``record_batches``, the step's micro-batches (``batches_step_N.pt``) and the probes
      (``probes.pt``), so that :mod:`geffect.replay` can recompute the step from a checkpoint.

    What needs the trainer object (Trainer passes callbacks only args, state and the model):
    ``pg_effect="batch"`` and ``record_batches`` read the micro-batches the trainer's
    ``training_step`` receives, ``probe_weights`` calls the objective. Give it with
    ``trainer=`` (or :meth:`bind`); ``UnlearningTrainer`` binds its callbacks itself, and its
    ``objective`` and ``ref_model`` are used. For another trainer pass ``objective=`` (a
    callable ``(model, inputs, ref_model=None)`` returning an object with ``loss`` and, where it
    reweights, ``token_weights`` / ``instance_weights``) and ``ref_model=`` (default: the
    trainer's ``ref_model`` attribute, if any). The unlearning batch of a micro-batch is
    ``inputs[unlearn_key]`` (``{"forget": ..., "retain": ...}`` batches, open-unlearning's
    layout) or the inputs themselves when they hold ``input_ids`` (a plain Trainer).

    Processes: every rank runs the callback. Under DDP each rank computes the rows of its share
    of the probe instances (r, r + W, ...) with the full all-reduced gradient, on the unwrapped
    model (no DDP hook fires); rank 0 gathers and writes. Under FSDP2 the gradient stays
    sharded and the engine gathers one layer's direction at a time.

    Args:
        probes: dict name -> batch (``input_ids``, ``attention_mask``, ``labels``, optional
            ``index``), e.g. from :func:`unlearning.probes.probe_batches`.
        every: track every k-th optimizer step.
        output_dir: run folder (default: the Trainer's ``args.output_dir``); the tracker
            writes into ``<output_dir>/analysis/geffect/``.
        pg_effect: False, ``"batch"`` (True) or ``"probe"``.
        probe_weights: record the objective's weights on the forget probe.
        groups, engine, coarse, rows_per_pass: as in :class:`geffect.GEffectTracker` (``rows_per_pass``:
            at most this many probe rows per tracking forward/backward; default all at once).
        trainer, objective, ref_model, unlearn_key: see above.
        record_batches: store each tracked step's micro-batches for a replay.
    """

    def __init__(
        self,
        probes: Mapping[str, Mapping[str, torch.Tensor]],
        *extra_positional,
        every: int = 1,
        output_dir: str | os.PathLike | None = None,
        pg_effect: bool | str = False,
        probe_weights: bool = False,
        groups=None,
        engine: str = "ghost",
        coarse: str | None = "thirds",
        trainer: Trainer | None = None,
        objective=None,
        ref_model: nn.Module | None = None,
        unlearn_key: str | None = "forget",
        record_batches: bool = False,
        rows_per_pass: int | None = None,
    ):
        if isinstance(probes, Trainer) or extra_positional:  # the earlier GEffectCallback(trainer, probes) form
            raise TypeError("GEffectCallback takes the probe sets first and the trainer as a keyword: "
                            "GEffectCallback(probes, trainer=trainer, ...)")
        if not isinstance(probes, Mapping) or not probes:
            raise ValueError("probes must be a non-empty dict name -> batch, e.g. {'forget': batch, 'retain': batch}")
        if pg_effect not in (False, True, "batch", "probe", None):
            raise ValueError(f"pg_effect must be False, 'batch' or 'probe', got {pg_effect!r}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if probe_weights and "forget" not in probes:
            raise ValueError("probe_weights records the objective's weights on the 'forget' probe; add a 'forget' probe set")
        self.every = every
        self.pg_effect = "batch" if pg_effect is True else (pg_effect or None)
        self.probe_weights = probe_weights
        self.run_dir = Path(output_dir) if output_dir is not None else None
        self.probes = probes
        self.groups = groups
        self.engine = engine
        self.coarse = coarse
        self.objective = objective
        self.ref_model = ref_model
        self.unlearn_key = unlearn_key
        self.record_batches = record_batches
        if rows_per_pass is not None and rows_per_pass < 1:
            raise ValueError(f"rows_per_pass must be None (all rows in one pass) or >= 1, got {rows_per_pass}")
        self.rows_per_pass = rows_per_pass
        self.trainer: Trainer | None = None
        self._tracker: GEffectTracker | None = None
        self._micro: list[Any] = []  # the micro-batch inputs of the current tracked step
        self._recording = False
        self._pending_logs: dict[str, float] = {}
        self.last_results: dict[str, Any] | None = None
        if trainer is not None:
            self.bind(trainer)

    # -- wiring ------------------------------------------------------------------------------
    @property
    def needs_batches(self) -> bool:
        return self.pg_effect == "batch" or self.record_batches

    def bind(self, trainer: Trainer) -> GEffectCallback:
        """Attach the trainer: its micro-batches (for ``pg_effect="batch"`` / ``record_batches``),
        ``objective`` and ``ref_model`` (for ``probe_weights``) and its log rows."""
        if self.trainer is trainer:
            return self
        if self.trainer is not None:
            raise ValueError("this GEffectCallback is bound to another trainer already; make one callback per trainer")
        self.trainer = trainer
        if self.needs_batches:
            original = trainer.training_step

            def training_step(model, inputs, *args, **kwargs):
                if self._recording:
                    self._micro.append(inputs)
                return original(model, inputs, *args, **kwargs)

            trainer.training_step = training_step  # instance attribute: Trainer calls self.training_step
        return self

    def _objective(self):
        return self.objective if self.objective is not None else getattr(self.trainer, "objective", None)

    def _reference(self):
        return self.ref_model if self.ref_model is not None else getattr(self.trainer, "ref_model", None)

    def should_track(self, step: int) -> bool:
        return (step - 1) % self.every == 0

    @property
    def output_dir(self) -> Path | None:
        """Where the tracker writes (``<run folder>/analysis``)."""
        return None if self.run_dir is None else self.run_dir / ANALYSIS_DIR

    @property
    def tracker(self) -> GEffectTracker:
        if self._tracker is None:
            raise RuntimeError("the tracker is created at the first tracked step (it needs the training device)")
        return self._tracker

    def _make_tracker(self, args) -> GEffectTracker:
        if self._tracker is None:
            device = args.device
            probes = {k: {n: t.to(device) if isinstance(t, torch.Tensor) and n != "index" else t for n, t in b.items()}
                      for k, b in self.probes.items()}
            self._tracker = GEffectTracker(self.output_dir, probes, groups=self.groups, engine=self.engine,
                                           coarse=self.coarse, distributed=is_distributed(),
                                           rows_per_pass=self.rows_per_pass)
            if self.record_batches:
                self._tracker.save_probes()
        return self._tracker

    # -- Trainer events ----------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        _check_backend(args, model, "GEffectCallback")
        if self.run_dir is None:
            self.run_dir = Path(args.output_dir)
        if self.needs_batches and self.trainer is None:
            raise ValueError(f"GEffectCallback(pg_effect={self.pg_effect!r}, record_batches={self.record_batches}) reads "
                             "the step's micro-batches: pass trainer=trainer (or call callback.bind(trainer))")
        if self.probe_weights and self._objective() is None:
            raise ValueError("probe_weights needs the objective: pass objective= (a callable (model, inputs, "
                             "ref_model=None) -> output with token_weights / instance_weights) or bind a trainer "
                             "that has an `objective` attribute")

    def on_step_begin(self, args, state, control, **kwargs):
        if self.should_track(state.global_step + 1):
            step_gradients(args).hold_clipping(args)
            self._micro = []
            self._recording = self.needs_batches

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step = state.global_step + 1  # the optimizer step this gradient is for
        if not self.should_track(step):
            return
        self._recording = False
        grads = step_gradients(args)
        try:
            grads.measure(model)
            grads.apply_masks(model, step)
            self._track(args, step, model, grads.pre_clip_norm())
        finally:
            grads.release(args, model)
            self._micro = []

    def on_step_end(self, args, state, control, **kwargs):
        step_gradients(args).restore(args)  # a step that never reached the optimizer (nothing to clip)
        self._recording = False

    def on_train_end(self, args, state, control, **kwargs):
        step_gradients(args).restore(args)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # trainers without log_main_process_metrics: the latest G-effect totals join the next training log row
        if self._pending_logs and logs is not None and "loss" in logs:
            logs.update(self._pending_logs)
            if state.log_history:
                state.log_history[-1].update(self._pending_logs)
            self._pending_logs = {}

    # -- work --------------------------------------------------------------------------------
    def _track(self, args, step: int, model: nn.Module, pre_clip_norm: float | None) -> None:
        direction = {n: p.grad.detach() for n, p in model.named_parameters() if p.grad is not None}
        if not direction:
            logger.warning("step %d: no gradients to track", step)
            return
        tracker = self._make_tracker(args)
        was_training = model.training
        model.eval()  # probe risks without dropout
        seconds: dict[str, float] = {}  # wall and CPU time of each part on this rank
        try:
            extra = {} if pre_clip_norm is None else {"pre_clip_norm": pre_clip_norm}
            with _timed(seconds, "geffect"):
                results = tracker.track(step, model, direction, extra=extra)
            del direction
            if self.pg_effect is not None:
                with _timed(seconds, "pg_effect"):
                    self._track_pg(step, model)
            if self.record_batches:
                tracker.write_step_batches(step, self._micro)
            if self.probe_weights:
                with _timed(seconds, "probe_weights"):
                    self._record_probe_weights(step, model)
        finally:
            model.train(was_training)
        per_rank = gather_objects(seconds) if tracker.world > 1 else [seconds]
        if not tracker.writer:
            return
        tracker.note(step, seconds=per_rank)  # per rank: wall / CPU seconds of each part of the tracking
        self.last_results = results
        totals = {f"geffect/{name}": float(r.total) for name, r in results.items()}
        log = getattr(self.trainer, "log_main_process_metrics", None)
        if log is not None:
            log(totals)
        else:
            self._pending_logs.update(totals)

    def _unlearn_batch(self, inputs: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
        if self.unlearn_key is not None and self.unlearn_key in inputs:
            return inputs[self.unlearn_key]
        if "input_ids" in inputs:
            return inputs
        raise KeyError(f"the trainer's inputs have neither {self.unlearn_key!r} nor input_ids (keys {sorted(inputs)}); "
                       "pass unlearn_key= naming the entry that holds the unlearning batch")

    def _track_pg(self, step: int, model: nn.Module) -> None:
        tracker = self.tracker
        if self.pg_effect == "probe":
            if "forget" not in tracker.probes:
                logger.warning("pg_effect='probe' needs a 'forget' probe set; no PG-effects recorded")
                self.pg_effect = None
                return
            tracker.track_instance_effect(step, model, dict(tracker.probes["forget"]))
            return
        batches = [self._unlearn_batch(inputs) for inputs in self._micro]
        if not batches:
            raise RuntimeError(f"step {step}: no micro-batch was recorded for PG-effects (is the trainer bound?)")
        device = next(iter(tracker.probes.values()))["input_ids"].device
        batch = {k: v.to(device) for k, v in concat_batches(batches).items()}
        ids = batch.pop("index", None)
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else None
        tracker.track_instance_effect(step, model, batch, instance_ids=ids, per_rank=True)

    def _record_probe_weights(self, step: int, model: nn.Module) -> None:
        """The objective's token / instance weights on the forget probe at the current weights."""
        tracker = self.tracker
        if not tracker.writer and not is_sharded(model):
            return  # one process suffices unless the forward is a collective (FSDP2: every rank calls it)
        probes = tracker.probes
        keys = ("input_ids", "attention_mask", "labels")
        batch = {k: probes["forget"][k] for k in keys if k in probes["forget"]}
        inputs = {"forget": batch}
        if "retain" in probes:
            inputs["retain"] = {k: probes["retain"][k] for k in keys if k in probes["retain"]}
        try:
            with torch.no_grad():
                out = self._objective()(model, inputs, ref_model=self._reference())
                lp = getattr(out, "token_logprobs", None)
                if lp is None:
                    lp = token_logprobs(model_logits(model, batch["input_ids"], batch.get("attention_mask")),
                                        batch["labels"])
        except (KeyError, ValueError) as err:  # e.g. an objective that needs refusal ("idk") batches
            logger.warning("probe weights: the objective cannot run on the forget/retain probes (%s); "
                           "not recording probe weights", err)
            self.probe_weights = False
            return
        finally:
            reshard(model)  # FSDP2: a no-grad forward leaves the root's parameters gathered
        mask = getattr(out, "answer_mask", None)
        mask = (answer_mask(batch["labels"]) if mask is None else mask).bool().cpu()  # (N, T)
        lp = lp.detach().float().cpu()  # (N, T)
        tw, iw = getattr(out, "token_weights", None), getattr(out, "instance_weights", None)
        n = int(batch["input_ids"].shape[0])
        tw = torch.ones_like(lp) if tw is None else tw.detach().float().cpu()  # (N, T)
        if iw is not None:  # instance-level weights (NPO-style; their token weights are a broadcast)
            weights, kind = iw.detach().float().cpu().flatten(), "instance"
        elif getattr(out, "token_weights", None) is not None:
            weights, kind = (tw * mask).sum(1) / mask.sum(1).clamp(min=1), "token_mean"
        else:
            weights, kind = torch.ones(n), "none"
        ids = tracker.instance_ids["forget"]
        rows = [(step, ids[i], t, p, w) for i in range(n) for t, p, w in
                zip(mask[i].nonzero().flatten().tolist(), lp[i][mask[i]].exp().tolist(), tw[i][mask[i]].tolist())]
        tracker.write_step_table(step, PROBE_TOKEN_WEIGHTS, pd.DataFrame(
            rows, columns=["step", "instance", "token", "likelihood", "weight"]))
        tracker.write_step_table(step, PROBE_INSTANCE_WEIGHTS, pd.DataFrame(
            {"step": step, "instance": ids, "weight": weights.tolist(), "kind": kind}))

