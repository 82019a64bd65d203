"""G-effects of the real training gradient for any ``transformers.Trainer``: :class:`GEffectCallback`.

    trainer.add_callback(GEffectCallback(probes, config=GEffectConfig(every=4), trainer=trainer))

The callback works on the accumulated gradient of an optimizer step at the Trainer's
``on_pre_optimizer_step`` event (after the last micro-batch's backward and the all-reduce,
before ``optimizer.step()``), for any ``Trainer`` subclass, single process, DDP or FSDP2. On a
step it tracks it holds the Trainer's clipping back to read the **pre-clip** gradient and clips
it itself afterwards, so the optimizer receives the same bits as without the callback
(:mod:`unlearning.callbacks.clipping` says why and how).

**What it changes, and gives back.** The callback keeps its state on itself. It changes two
things on the Trainer, only around a tracked step: ``args.max_grad_norm`` (0 while the clipping
is held) and, when bound to the trainer, an instance attribute ``trainer.training_step`` (a
wrapper that records the step's micro-batches and measures the pre-clip norm after the last
backward). Both are given back after the step's optimizer event, at the end of training, and
when the step raises (in the training step or in the tracking); a Trainer run that raises
leaves neither behind. An unbound callback holds the clipping from ``on_step_begin`` (it sees
no micro-batch); if that step's training step raises, ``max_grad_norm`` comes back at the
next ``train()``: bind the callback to get it back at once.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from geffect import GEffectConfig, GEffectTracker
from geffect.batches import concat_batches
from geffect.distributed import gather_objects, is_distributed, is_sharded, reshard
from geffect.engine import model_logits
from geffect.losses import answer_mask, token_logprobs
from unlearning.callbacks.clipping import ClipHold, check_backend
from unlearning.callbacks.weight_mask import WeightMaskCallback
from unlearning.runs.folder import PROBE_INSTANCE_WEIGHTS, PROBE_TOKEN_WEIGHTS, RunFolder

logger = logging.getLogger(__name__)

__all__ = ["GEffectCallback"]

_NOTHING = object()


@contextlib.contextmanager
def _timed(into: dict[str, float], name: str):
    """Record ``name`` (wall seconds) and ``name_cpu`` (this process's CPU seconds) of the block."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        into[name] = time.perf_counter() - wall
        into[f"{name}_cpu"] = time.process_time() - cpu


class GEffectCallback(TrainerCallback):
    """Track the G-effect of the real training gradient on fixed probe sets, for any Trainer.

    At the optimizer steps ``config.should_track`` selects (1, 1 + every, 1 + 2·every, ...) the
    callback reads the accumulated gradient at ``on_pre_optimizer_step`` — after the last
    micro-batch's backward and the all-reduce, with the weight masks applied, **before
    clipping** — at the weights θ_s the gradient was taken at, and writes through one
    ``geffect.GEffectTracker`` under ``<output_dir>/analysis/geffect/``:

    - G-effects E[i, g] = <grad R(x_i), grad> for every probe instance i and parameter group g
      (``GEffectRecord.table()``); ``geffect/forget``, ``geffect/retain``, ... go to the logs;
    - PG-effects (Wang et al. 2025, Eq. 5; ``GEffectRecord.pg_table()``), with ``pg_effect``:
      ``"batch"`` for the unlearning instances of the step's micro-batches (all processes),
      ``"probe"`` for the fixed forget-probe instances (trajectories over steps);
    - with ``probe_weights``, the weights the objective (and its reference model) puts on the
      forget-probe answer tokens and instances, as step tables ``probe_token_weights`` (step,
      instance, token, likelihood, weight) and ``probe_instance_weights`` (step, instance,
      weight, kind) (``GEffectRecord.step_table``);
    - with ``record_batches``, the step's micro-batches (``batches_step_N.pt``) and the probes
      (``probes.pt``), so that :mod:`geffect.replay` can recompute the step from a checkpoint.

    What needs the trainer object (Trainer passes callbacks only args, state and the model):
    ``pg_effect="batch"`` and ``record_batches`` read the micro-batches the trainer's
    ``training_step`` receives, ``probe_weights`` calls the objective, and the weight masks of
    the trainer's :class:`WeightMaskCallback` s are applied before the gradient is read. Give it
    with ``trainer=`` (or :meth:`bind`); ``UnlearningTrainer`` binds its callbacks itself, and
    its ``objective`` and ``ref_model`` are used. For another trainer pass ``objective=`` (a
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
            ``index``), e.g. from :func:`unlearning.data.probe_batches`.
        config: a :class:`geffect.GEffectConfig` (every, groups, engine, coarse, pg_effect,
            probe_weights, rows_per_pass, record_batches); its fields may instead be given as
            keywords (``GEffectCallback(probes, every=4, pg_effect="batch")``), applied on top.
        output_dir: run folder (default: the Trainer's ``args.output_dir``); the tracker
            writes into ``<output_dir>/analysis/geffect/``.
        trainer, objective, ref_model, unlearn_key: see above.
    """

    def __init__(
        self,
        probes: Mapping[str, Mapping[str, torch.Tensor]],
        *extra_positional,
        config: GEffectConfig | None = None,
        output_dir: str | os.PathLike | None = None,
        trainer: Trainer | None = None,
        objective=None,
        ref_model: nn.Module | None = None,
        unlearn_key: str | None = "forget",
        **settings: Any,
    ):
        if isinstance(probes, Trainer) or extra_positional:  # the earlier GEffectCallback(trainer, probes) form
            raise TypeError("GEffectCallback takes the probe sets first and the trainer as a keyword: "
                            "GEffectCallback(probes, trainer=trainer, ...)")
        if not isinstance(probes, Mapping) or not probes:
            raise ValueError("probes must be a non-empty dict name -> batch, e.g. {'forget': batch, 'retain': batch}")
        self.config = GEffectConfig.resolve(config, **settings)
        if self.config.probe_weights and "forget" not in probes:
            raise ValueError("probe_weights records the objective's weights on the 'forget' probe; add a 'forget' probe set")
        self.probes = probes
        self.run_dir = Path(output_dir) if output_dir is not None else None
        self.objective = objective
        self.ref_model = ref_model
        self.unlearn_key = unlearn_key
        self.trainer: Trainer | None = None
        self.clipping = ClipHold()
        self.probe_weights = self.config.probe_weights  # switched off if the objective cannot run on the probes
        self.pg_effect = self.config.pg_effect or None  # switched off if there is no forget probe
        self._tracker: GEffectTracker | None = None
        self._masks: list[WeightMaskCallback] = []  # the bound trainer's mask callbacks
        self._wrapper = None  # our trainer.training_step wrapper while it is installed
        self._previous: Any = _NOTHING  # the instance attribute it replaced, if any
        self._micro: list[Any] = []  # the micro-batch inputs of the current tracked step
        self._recording = False
        self._pending_logs: dict[str, float] = {}
        self.last_results: dict[str, Any] | None = None
        if trainer is not None:
            self.bind(trainer)

    # -- wiring ------------------------------------------------------------------------------
    @property
    def needs_batches(self) -> bool:
        return self.pg_effect == "batch" or self.config.record_batches

    def bind(self, trainer: Trainer) -> GEffectCallback:
        """Attach the trainer: its micro-batches (for ``pg_effect="batch"`` / ``record_batches``),
        weight-mask callbacks, ``objective`` and ``ref_model`` (for ``probe_weights``) and its log rows."""
        if self.trainer is trainer:
            return self
        if self.trainer is not None:
            raise ValueError("this GEffectCallback is bound to another trainer already; make one callback per trainer")
        self.trainer = trainer
        return self

    def _objective(self):
        return self.objective if self.objective is not None else getattr(self.trainer, "objective", None)

    def _reference(self):
        return self.ref_model if self.ref_model is not None else getattr(self.trainer, "ref_model", None)

    def should_track(self, step: int) -> bool:
        return self.config.should_track(step)

    @property
    def output_dir(self) -> Path | None:
        """Where the tracker writes (``<run folder>/analysis``)."""
        return None if self.run_dir is None else RunFolder(self.run_dir).analysis

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
            self._tracker = GEffectTracker(self.output_dir, probes, self.config, distributed=is_distributed())
            if self.config.record_batches:
                self._tracker.save_probes()
        return self._tracker

    # -- what the callback changes on the Trainer, and gives back ---------------------------------
    def _wrap_training_step(self) -> None:
        """Put the recording wrapper on the bound trainer's ``training_step`` for one tracked step."""
        trainer = self.trainer
        if trainer is None or self._wrapper is not None:
            return
        original = trainer.training_step

        def training_step(model, inputs, *args, **kwargs):
            if training_step is not self._wrapper:  # given back, but another wrapper sits on top of this one
                return original(model, inputs, *args, **kwargs)
            if self._recording:
                self._micro.append(inputs)
            try:
                loss = original(model, inputs, *args, **kwargs)
            except BaseException:
                self._give_back()
                raise
            if trainer.accelerator.sync_gradients:  # the step's last backward: the gradient is complete
                self.clipping.hold(trainer.args)
                self.clipping.measure(model)  # before any mask
            return loss

        self._previous = trainer.__dict__.get("training_step", _NOTHING)
        trainer.training_step = training_step  # instance attribute: Trainer calls self.training_step
        self._wrapper = training_step

    def _give_back(self) -> None:
        """Undo every change on the Trainer: the clipping hold and the ``training_step`` wrapper."""
        self.clipping.restore()
        if self._wrapper is not None:
            attrs = self.trainer.__dict__
            if attrs.get("training_step") is self._wrapper:
                if self._previous is _NOTHING:
                    del attrs["training_step"]
                else:
                    attrs["training_step"] = self._previous
            self._wrapper, self._previous = None, _NOTHING
        self._recording = False
        self._micro = []

    # -- Trainer events ----------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        check_backend(args, model, "GEffectCallback")
        self._give_back()  # an unbound callback's hold left by an earlier run that raised
        if self.run_dir is None:
            self.run_dir = Path(args.output_dir)
        if self.needs_batches and self.trainer is None:
            raise ValueError(f"GEffectCallback(pg_effect={self.pg_effect!r}, record_batches="
                             f"{self.config.record_batches}) reads the step's micro-batches: pass trainer=trainer (or "
                             "call callback.bind(trainer))")
        if self.probe_weights and self._objective() is None:
            raise ValueError("probe_weights needs the objective: pass objective= (a callable (model, inputs, "
                             "ref_model=None) -> output with token_weights / instance_weights) or bind a trainer "
                             "that has an `objective` attribute")
        self._masks = [cb for cb in self.trainer.callback_handler.callbacks
                       if isinstance(cb, WeightMaskCallback)] if self.trainer is not None else []

    def on_step_begin(self, args, state, control, **kwargs):
        if self.should_track(state.global_step + 1):
            self._micro = []
            self._recording = self.needs_batches
            if self.trainer is None:
                self.clipping.hold(args)  # unbound: no later event before the Trainer clips
            else:
                self._wrap_training_step()

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step = state.global_step + 1  # the optimizer step this gradient is for
        if not self.should_track(step):
            return
        self._recording = False
        try:
            self.clipping.measure(model)
            for mask in self._masks:  # masked after the norm, before the gradient is read
                mask.apply(model, step)
            self._track(args, step, model, self.clipping.pre_clip_norm())
            self.clipping.release(model)
        finally:
            self._give_back()

    def on_step_end(self, args, state, control, **kwargs):
        self._give_back()  # a step that never reached the optimizer (nothing to clip)

    def on_train_end(self, args, state, control, **kwargs):
        self._give_back()

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
            if self.config.record_batches:
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
        batch = {k: tracker.probes["forget"][k] for k in ("input_ids", "attention_mask", "labels")
                 if k in tracker.probes["forget"]}
        out, lp = self._objective_on_probes(model, batch)
        if out is None:
            return
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

    def _objective_on_probes(self, model: nn.Module, batch: Mapping[str, torch.Tensor]):
        """(objective output, forget token log-probs) on the forget (+ retain) probe; (None, None) if it cannot run."""
        probes = self.tracker.probes
        inputs = {"forget": batch}
        if "retain" in probes:
            inputs["retain"] = {k: probes["retain"][k] for k in ("input_ids", "attention_mask", "labels")
                                if k in probes["retain"]}
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
            return None, None
        finally:
            reshard(model)  # FSDP2: a no-grad forward leaves the root's parameters gathered
        return out, lp
