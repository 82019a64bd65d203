"""G-effects after the fact: replay the checkpoints of a finished run.

    python -m geffect.replay runs/npo --objective npo --objective-kwargs '{"beta": 0.5}' \\
        --initial-model path/to/model --ref-model initial
    python -m geffect.replay runs/other --objective mypkg.losses:grad_ascent --batches batch.pt --probes probes.pt

This is what the official G-effect code (tmlr-group/G-effect) does with a frozen trainer over
saved checkpoints, done exactly: for every ``checkpoint-S`` folder of a run (ours or any
``transformers.Trainer``'s) the model is loaded, the direction ``d = grad L_u`` of the objective
is taken at the checkpoint's weights θ_S and the G-effects ``E[i, g] = <grad_g R(x_i), d_g>``
are written by a :class:`geffect.GEffectTracker`, in the same tidy tables as live tracking.

**Which step.** ``checkpoint-S`` holds the weights after S optimizer updates, the weights the
gradient of update S + 1 is taken at, so it is replayed as **step S + 1** (live tracking's
numbering: step 1 = the initial model, replayed from ``initial_model``).

**Which batch.** The direction is the mean over micro-batches of ``grad objective(model,
inputs)``: the gradient a Trainer accumulates over its accumulation steps (loss / K per
micro-batch) and averages over processes. ``batches`` says which micro-batches:

- ``"recorded"`` (default): the micro-batches the live run drew at that step, stored by
  ``GEffectCallback(record_batches=True)`` (``batches_step_N.pt``, every process's, in the
  run's tracker folder). With the checkpoint of step S - 1 this reproduces the live G-effect of
  step S (tested to 1e-5); steps without stored batches are skipped (say so in a log line).
  Checkpoints at the tracked steps make every tracked step replayable: track every k steps
  and save every k steps (checkpoint-jk replays step jk + 1).
- a list of micro-batch inputs (or one inputs dict): a fixed replay batch at every checkpoint,
  e.g. for a run that recorded nothing.
- a callable ``step -> list of inputs``.

Adam's state is not needed: a G-effect uses the raw gradient. The replay runs in eval mode
(dropout off); a live gradient taken with dropout on is one dropout sample of it.

**Objectives.** ``objective`` is a callable ``(model, inputs, ref_model=None)`` returning a
scalar or an object with ``.loss`` (a plain ``loss(model, inputs)`` works too), a
``"module:attribute"`` path to one (called with ``objective_kwargs`` first, if given), or a
name resolved through the ``geffect.objectives`` entry points: each is a function
``resolve(name, **kwargs)`` returning the objective or raising ``KeyError`` / ``ValueError``
(the ``geffect-unlearning`` distribution registers ``unlearning.replay:resolve_objective``,
so every ``python -m unlearning.train --method`` name works; refresh an editable install with
``pip install -e . --no-deps`` after changing entry points). ``geffect`` itself never imports
``unlearning``.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import json
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geffect.batches import concat_batches, load_batches, to_device
from geffect.cli import dataclass_parser, parse_dataclass
from geffect.effect import flat_gradient
from geffect.tracker import GEffectRecord, GEffectTracker

logger = logging.getLogger(__name__)

__all__ = ["ENTRY_POINT_GROUP", "ReplayArguments", "checkpoints", "main", "replay", "resolve_objective"]

ENTRY_POINT_GROUP = "geffect.objectives"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------- objectives
def _call_style(fn: Callable) -> Callable:
    """``fn(model, inputs, ref_model=...)`` if it takes a reference, else ``fn(model, inputs)``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn
    takes_ref = "ref_model" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()) or len(
        [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 3
    if takes_ref:
        return fn

    def objective(model, inputs, ref_model=None):
        return fn(model, inputs)

    objective.needs_reference = getattr(fn, "needs_reference", False)
    return objective


def resolve_objective(objective: str | Callable, **kwargs: Any) -> Callable:
    """An objective callable ``(model, inputs, ref_model=None)`` from a callable, ``"module:attr"`` or a name.

    Names are looked up through the ``geffect.objectives`` entry points (module docstring).
    """
    if callable(objective):
        if kwargs:
            raise ValueError("objective_kwargs apply to objective names and 'module:attr' factories, not to a callable")
        return _call_style(objective)
    if not isinstance(objective, str) or not objective:
        raise TypeError(f"objective must be a callable, 'module:attr' or a name, got {objective!r}")
    if ":" in objective:
        module, _, attr = objective.partition(":")
        target = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
        return _call_style(target(**kwargs) if kwargs else target)
    errors = []
    found = entry_points(group=ENTRY_POINT_GROUP)
    for ep in found:
        try:
            return _call_style(ep.load()(objective, **kwargs))
        except (KeyError, ValueError) as err:
            errors.append(f"{ep.value}: {err}")
    if not found:
        raise ValueError(f"no objective named {objective!r}: nothing provides '{ENTRY_POINT_GROUP}' entry points. "
                         "Install a package that does (the repository's: `pip install -e . --no-deps`), or pass "
                         "'module:function' or a callable")
    raise ValueError(f"no objective named {objective!r}: " + "; ".join(errors))


# ---------------------------------------------------------------------------- checkpoints
def checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(global_step, folder)`` of every ``checkpoint-*`` folder of a run, by step.

    The step is ``trainer_state.json``'s ``global_step`` when present, else the folder suffix.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    out = []
    for path in run_dir.iterdir():
        m = _CHECKPOINT_RE.match(path.name)
        if not (m and path.is_dir()):
            continue
        state = path / "trainer_state.json"
        step = int(json.loads(state.read_text())["global_step"]) if state.is_file() else int(m.group(1))
        out.append((step, path))
    return sorted(out)


def _load_hf(path: str | Path, dtype: torch.dtype, device) -> nn.Module:
    from transformers import AutoModelForCausalLM  # the default loader; pass load_model= for anything else

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(device)


def _as_list(inputs) -> list:
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _direction(model: nn.Module, objective: Callable, micro: Sequence[Any], ref_model, device) -> dict[str, torch.Tensor]:
    """Mean over micro-batches of grad objective (eval mode), float32 accumulation (float64 models: float64)."""
    total: dict[str, torch.Tensor] = {}
    for inputs in micro:
        inputs = to_device(inputs, device)
        grad = flat_gradient(model, lambda m: objective(m, inputs, ref_model=ref_model))
        for n, g in grad.items():
            g = g.float() if g.dtype != torch.float64 else g
            total[n] = total[n] + g if n in total else g.clone()
    return {n: g / len(micro) for n, g in total.items()}


# ---------------------------------------------------------------------------- replay
MicroBatches = Callable[[int], list]  # step -> the micro-batch inputs of that step


def replay(
    run_dir: str | Path,
    objective: str | Callable,
    *,
    objective_kwargs: Mapping[str, Any] | None = None,
    probes: Mapping[str, Mapping[str, torch.Tensor]] | str | Path | None = None,
    batches: str | Sequence[Any] | Mapping[str, Any] | Callable[[int], Sequence[Any]] = "recorded",
    output_dir: str | Path | None = None,
    record_dir: str | Path | None = None,
    initial_model: str | Path | nn.Module | None = None,
    ref_model: str | Path | nn.Module | None = None,
    load_model: Callable[[Path], nn.Module] | None = None,
    steps: Sequence[int] | None = None,
    pg_effect: str | None = None,
    unlearn_key: str | None = "forget",
    groups=None,
    engine: str = "ghost",
    coarse: str | None = "thirds",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> GEffectRecord:
    """G-effects of ``objective`` at the checkpoints of ``run_dir``, written like live tracking.

    Args:
        run_dir: a Trainer output folder with ``checkpoint-S`` folders.
        objective, objective_kwargs: see the module docstring.
        probes: ``{name: batch}``, a file / dataset folder for :func:`geffect.batches.load_batches`,
            or None: the probe sets the live run stored (``probes.pt`` in ``record_dir``).
        batches: ``"recorded"``, fixed micro-batch inputs, or ``step -> inputs``.
        output_dir: the replay's tracker folder (files in ``<output_dir>/geffect/``); default
            ``<run_dir>/replay``. A folder holding a replay resumes it (steps on disk skipped).
        record_dir: the live run's tracker folder (default ``<run_dir>/analysis``).
        initial_model: model (or path) at the initial weights, replayed as step 1.
        ref_model: the objective's reference: a model, a path, ``"initial"`` (a frozen copy of
            ``initial_model``) or None. An objective with ``needs_reference`` requires one.
        load_model: ``path -> model`` (default ``AutoModelForCausalLM.from_pretrained`` in
            ``dtype`` on ``device``).
        steps: replay only these steps (step = checkpoint step + 1).
        pg_effect: None, ``"batch"`` (the unlearning instances of the step's micro-batches,
            ``inputs[unlearn_key]`` or the inputs themselves) or ``"probe"`` (the forget probe).
        groups, engine, coarse: as in :class:`geffect.GEffectTracker`.

    Returns the replay's :class:`geffect.GEffectRecord` (``.table()``, ``.pg_table()``).

    The arguments are checked and normalised here, once: ``batches`` becomes a function ``step ->
    list of micro-batch inputs`` (:func:`_micro_batches`), the checkpoints and the initial model
    a list of ``(step, source)`` pairs (:func:`_plan`), the reference a model or None;
    :func:`_replay_steps` works on that one form.
    """
    run_dir = Path(run_dir)
    fn = resolve_objective(objective, **dict(objective_kwargs or {}))
    record = GEffectRecord(Path(record_dir) if record_dir is not None else run_dir / "analysis")
    loader = load_model or (lambda path: _load_hf(path, dtype, device))
    probes = _probe_sets(probes, record, device)
    if pg_effect not in (None, "batch", "probe"):
        raise ValueError(f"pg_effect must be None, 'batch' or 'probe', got {pg_effect!r}")

    def model_at(source) -> nn.Module:
        model = source if isinstance(source, nn.Module) else loader(Path(source))
        return model.to(device).eval()

    micro_of, have = _micro_batches(batches, record)
    plan = _plan(run_dir, initial_model, steps, have)
    reference = _reference_model(ref_model, initial_model, model_at)
    if reference is None and getattr(fn, "needs_reference", False):
        raise ValueError("the objective needs a reference model: pass ref_model ('initial', a path or a model)")
    tracker = GEffectTracker(Path(output_dir) if output_dir is not None else run_dir / "replay", probes,
                             groups=groups, engine=engine, coarse=coarse)
    _replay_steps(tracker, plan, model_at, fn, micro_of, reference, probes=probes, pg_effect=pg_effect,
                  unlearn_key=unlearn_key, device=device)
    return GEffectTracker.load(tracker.output_dir)


def _probe_sets(probes, record: GEffectRecord, device) -> dict[str, dict[str, torch.Tensor]]:
    """``probes`` as ``{name: batch}`` on ``device``: given, loaded from a file / dataset folder, or
    (None) the probe sets the live run stored."""
    if probes is None:
        probes = record.probes()
    elif isinstance(probes, (str, Path)):
        probes = load_batches(probes)
    return to_device(dict(probes), device)


def _plan(run_dir: Path, initial_model, steps: Sequence[int] | None, have: set[int] | None) -> list[tuple[int, Any]]:
    """``(step, source)`` pairs to replay, by step: ``checkpoint-S`` folders as step S + 1, the initial
    model as step 1, restricted to ``steps`` and to the steps with micro-batches (``have``)."""
    plan: list[tuple[int, Any]] = [(s + 1, path) for s, path in checkpoints(run_dir)]
    if initial_model is not None:
        plan.insert(0, (1, initial_model))
    if steps is not None:
        wanted = {int(s) for s in steps}
        plan = [(s, src) for s, src in plan if s in wanted]
    if have is not None:
        skipped = [s for s, _ in plan if s not in have]
        if skipped:
            logger.info("replay: steps %s have no recorded micro-batches (tracked steps: %s); skipped", skipped,
                        sorted(have))
        plan = [(s, src) for s, src in plan if s in have]
    if not plan:
        raise ValueError(f"nothing to replay in {run_dir}: no checkpoint-* folder (or initial model) with a batch "
                         f"for the requested steps")
    return plan


def _micro_batches(batches, record: GEffectRecord) -> tuple[MicroBatches, set[int] | None]:
    """``batches`` in its one canonical form: ``step -> list of micro-batch inputs``, and the steps
    that have micro-batches (None: every step).

    ``"recorded"``: the live run's stored micro-batches (:meth:`GEffectRecord.step_batches`, only
    at its tracked steps); a callable: called per step; a list of inputs (or one inputs dict):
    the same replay batch at every step.
    """
    if isinstance(batches, str) and batches == "recorded":
        return (lambda step: _as_list(record.step_batches(step))), set(record.batch_steps)
    if callable(batches):
        return (lambda step: _as_list(batches(step))), None
    if isinstance(batches, (list, tuple, Mapping)):
        fixed = _as_list(batches)
        return (lambda step: fixed), None
    raise ValueError(f"batches must be 'recorded', micro-batch inputs or a callable, got {batches!r}")


def _reference_model(ref_model, initial_model, model_at: Callable[[Any], nn.Module]) -> nn.Module | None:
    """The objective's frozen reference (eval mode, no gradients), or None: ``ref_model`` loaded,
    or for ``"initial"`` a copy of ``initial_model``."""
    reference = None
    if isinstance(ref_model, str) and ref_model == "initial":
        if initial_model is None:
            raise ValueError("ref_model='initial' needs initial_model")
        reference = copy.deepcopy(initial_model) if isinstance(initial_model, nn.Module) else model_at(initial_model)
    elif ref_model is not None:
        reference = model_at(ref_model)
    if reference is not None:
        reference.eval().requires_grad_(False)
    return reference


def _replay_steps(tracker: GEffectTracker, plan: Sequence[tuple[int, Any]], model_at: Callable[[Any], nn.Module],
                  objective: Callable, micro_of: MicroBatches, reference: nn.Module | None, *,
                  probes: Mapping[str, Mapping[str, torch.Tensor]], pg_effect: str | None, unlearn_key: str | None,
                  device) -> None:
    """The core: for each ``(step, source)`` of ``plan`` not on disk yet, the direction of
    ``objective`` at the source's weights over the step's micro-batches, tracked (and PG-effects)."""
    for step, source in plan:
        if step in tracker.steps and (pg_effect is None or step in tracker.pg_steps):
            logger.info("replay: step %d already on disk", step)
            continue
        model = model_at(source)
        micro = micro_of(step)
        direction = _direction(model, objective, micro, reference, device)
        name = source.name if isinstance(source, Path) else str(source) if isinstance(source, str) else "initial model"
        tracker.track(step, model, direction, extra={"replay": True, "checkpoint": name, "micro_batches": len(micro)})
        del direction
        if pg_effect == "probe" and "forget" in probes:
            tracker.track_instance_effect(step, model, dict(probes["forget"]))
        elif pg_effect == "batch":
            parts = [mb[unlearn_key] if unlearn_key is not None and unlearn_key in mb else mb for mb in micro]
            batch = to_device(concat_batches(parts), device)
            ids = batch.pop("index", None)
            tracker.track_instance_effect(step, model, batch, instance_ids=None if ids is None else ids.tolist())
        logger.info("replay: step %d from %s (%d micro-batches)", step, name, len(micro))
        if not isinstance(source, nn.Module):
            del model


# ---------------------------------------------------------------------------- CLI
@dataclass
class ReplayArguments:
    """``python -m geffect.replay``: G-effects over the checkpoints of a finished run."""

    run_dir: str = field(metadata={"help": "Trainer output folder holding checkpoint-* folders (may also be given "
                                           "as the first argument)."})
    objective: str = field(metadata={"help": "Objective name (geffect.objectives entry points, e.g. ga, npo, satimp) "
                                             "or 'module:function'."})
    objective_kwargs: str | None = field(default=None, metadata={"help": "Objective keyword arguments as JSON."})
    probes: str | None = field(default=None, metadata={
        "help": "Probe sets: a torch file {name: batch} or a datasets folder of tokenised rows (one split per probe "
                "set). Default: the probes.pt the live run stored."})
    batches: str = field(default="recorded", metadata={
        "help": "'recorded' (the live run's micro-batches of each step) or a torch file / datasets folder with a "
                "fixed replay batch (inputs dict or list of them) used at every checkpoint."})
    initial_model: str | None = field(default=None, metadata={"help": "Model folder at the initial weights (replays step 1)."})
    ref_model: str | None = field(default=None, metadata={
        "help": "Reference model: a folder, or 'initial' (a frozen copy of --initial-model)."})
    output_dir: str | None = field(default=None, metadata={"help": "Replay tracker folder (default RUN_DIR/replay)."})
    record_dir: str | None = field(default=None, metadata={"help": "Live tracker folder (default RUN_DIR/analysis)."})
    steps: str | None = field(default=None, metadata={"help": "Comma-separated steps to replay (default: all)."})
    pg_effect: str | None = field(default=None, metadata={"help": "PG-effects too: 'batch' or 'probe'."})
    engine: str = field(default="ghost", metadata={"help": "G-effect engine: ghost, loop or func."})
    device: str = field(default="cpu", metadata={"help": "Device for the models."})
    dtype: str = field(default="float32", metadata={"help": "Model dtype: float32, bfloat16 or float64."})


def main(argv: Sequence[str] | None = None) -> GEffectRecord:
    """``python -m geffect.replay``: parse :class:`ReplayArguments` (the run folder may come first) and replay."""
    parser = dataclass_parser(ReplayArguments, prog="python -m geffect.replay", description=ReplayArguments.__doc__)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):  # `python -m geffect.replay RUN_DIR ...`
        argv = ["--run_dir", *argv]
    args = parse_dataclass(parser, argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}.get(args.dtype)
    if dtype is None:
        raise ValueError(f"--dtype must be float32, bfloat16 or float64, got {args.dtype!r}")
    batches: Any = args.batches if args.batches == "recorded" else load_batches(args.batches)
    record = replay(
        args.run_dir, args.objective,
        objective_kwargs=json.loads(args.objective_kwargs) if args.objective_kwargs else None,
        probes=args.probes, batches=batches, output_dir=args.output_dir, record_dir=args.record_dir,
        initial_model=args.initial_model, ref_model=args.ref_model,
        steps=[int(s) for s in args.steps.split(",")] if args.steps else None,
        pg_effect=args.pg_effect, engine=args.engine, device=args.device, dtype=dtype,
    )
    print(f"replayed steps {record.steps} into {record.dir}")
    return record


if __name__ == "__main__":
    main()
