"""The pre-clip gradient of an optimizer step, as a Trainer callback can see it.

``transformers.Trainer`` clips the accumulated gradient *before* its ``on_pre_optimizer_step``
event, with ``torch.nn.utils.clip_grad_norm_`` (``Trainer._clip_grad_norm`` ->
``Accelerator.clip_grad_norm_`` -> ``clip_grad_norm_(model.parameters(), max_grad_norm)`` for one
process, DDP and FSDP2), which multiplies every gradient by the scalar
``c = min(1, max_norm / (N + 1e-6))``, N the global 2-norm. Undoing it after the fact needs N,
which the Trainer keeps in a local variable; it cannot be recovered from the clipped gradient
either: when clipping is active its norm is ``max_norm * N / (N + 1e-6)``, so
``N = 1e-6 * M / (max_norm - M)`` divides by a difference of order 1e-6 / N (for N = 5,
max_norm = 1 a relative error of 1e-8 in M gives 5 % in N).

So a callback that needs the pre-clip gradient of a step *holds the clipping back*
(:class:`ClipHold`): it sets ``args.max_grad_norm = 0`` (the Trainer then only measures the
norm, which it logs as ``grad_norm`` as before), measures N on the unmasked gradient, reads what
it needs, then scales the gradient by c with ``torch.nn.utils.clip_grads_with_norm_`` and gives
``max_grad_norm`` back. ``clip_grad_norm_`` is exactly ``get_total_norm`` followed by
``clip_grads_with_norm_``, and masking commutes with a scalar factor, so the optimizer receives
the same bits as without the callback.

Limits: DeepSpeed clips inside its engine and keeps gradients out of ``.grad`` (not supported);
FSDP1 flattens parameters (use FSDP2, ``--fsdp_config '{"fsdp_version": 2}'``); a Trainer
subclass that overrides ``_clip_grad_norm`` is bypassed on held steps (the hold clips with
torch's function, which is what Trainer's own implementation calls).
"""
from __future__ import annotations

import torch
from torch import nn

from geffect.distributed import full_tensor, is_dtensor

__all__ = ["ClipHold", "check_backend", "clip_with_norm", "step_gradients", "total_norm"]


def step_gradients(model: nn.Module) -> list[torch.Tensor]:
    """The ``.grad`` tensors of ``model`` (one device mesh at most)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    meshes = {g.device_mesh for g in grads if is_dtensor(g)}
    if len(meshes) + any(not is_dtensor(g) for g in grads) > 1:  # several meshes, or DTensors and plain
        raise NotImplementedError("gradients on several device meshes (tensor + data parallel) are not supported; "
                                  "clip them with Trainer's own clipping (do not track G-effects) or use FSDP2 alone")
    return grads


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The global 2-norm exactly as ``torch.nn.utils.clip_grad_norm_`` computes it."""
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: the function clip_grad_norm_ calls
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))  # older torch


def clip_with_norm(params, max_norm: float, norm: torch.Tensor) -> None:
    """Scale the gradients by ``min(1, max_norm / (norm + 1e-6))`` (torch's clipping factor)."""
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):  # torch >= 2.6
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return
    coef = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad.mul_(coef.to(p.grad.device))


def check_backend(args, model: nn.Module | None, what: str) -> None:
    """Refuse the backends whose gradients a callback cannot read or clip (DeepSpeed, FSDP1)."""
    if getattr(args, "deepspeed", None):
        raise NotImplementedError(f"{what} does not support DeepSpeed: it clips inside its engine and keeps gradients "
                                  "out of .grad; use DDP or FSDP2 (--fsdp with --fsdp_config '{\"fsdp_version\": 2}')")
    if model is not None:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            raise NotImplementedError(f"{what} does not support FSDP1 (flattened parameters); use FSDP2: "
                                      "--fsdp_config '{\"fsdp_version\": 2}'")


class ClipHold:
    """Holds the Trainer's clipping of one step back (see the module docstring); one per callback.

    :meth:`hold` sets ``args.max_grad_norm = 0`` and remembers the value; :meth:`measure` takes
    the pre-clip norm N (before any mask); :meth:`release` clips with N and gives the value
    back; :meth:`restore` gives it back without clipping (a step that never reached the
    optimizer, the end of training, or an exception). Nothing else is changed.
    """

    def __init__(self) -> None:
        self.max_norm: float | None = None  # args.max_grad_norm held back for this step
        self.norm: torch.Tensor | None = None  # pre-clip global 2-norm of the held step
        self._args = None
        self.last_norm: float | None = None  # the last held step's pre-clip norm and clip factor
        self.last_clip_coef: float | None = None

    @property
    def held(self) -> bool:
        return self.max_norm is not None

    def hold(self, args) -> None:
        """Stop the Trainer from clipping this step (``args.max_grad_norm = 0`` until :meth:`release`)."""
        if self.max_norm is None and args.max_grad_norm is not None and args.max_grad_norm > 0:
            self.max_norm = float(args.max_grad_norm)
            self._args = args
            args.max_grad_norm = 0.0
            self.norm = None

    def measure(self, model: nn.Module) -> None:
        """Measure the pre-clip norm of a held step (before masks; a collective under FSDP2)."""
        if self.max_norm is not None and self.norm is None:
            self.norm = total_norm(step_gradients(model))

    def pre_clip_norm(self) -> float | None:
        """The measured pre-clip norm of the held step (None if nothing is held)."""
        return None if self.norm is None else float(full_tensor(self.norm))

    def release(self, model: nn.Module) -> None:
        """Clip a held step (factor from the pre-clip norm) and give ``max_grad_norm`` back to the Trainer."""
        if self.max_norm is None:
            return
        max_norm = self.max_norm
        norm = self.norm if self.norm is not None else total_norm(step_gradients(model))
        self.restore()
        clip_with_norm(model.parameters(), max_norm, norm)
        value = float(full_tensor(norm))
        self.last_norm = value
        self.last_clip_coef = min(1.0, max_norm / (value + 1e-6))

    def restore(self) -> None:
        """Give ``max_grad_norm`` back without clipping."""
        if self.max_norm is not None:
            self._args.max_grad_norm = self.max_norm
        self.max_norm, self.norm, self._args = None, None, None
