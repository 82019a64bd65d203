"""Unlearn only the weights of a mask (WAGLE) in any ``transformers.Trainer``: :class:`WeightMaskCallback`.

    trainer.add_callback(WeightMaskCallback("masks/wagle-0.8.safetensors"))    # clip, then mask

WAGLE's order (Jia et al., NeurIPS 2024; OPTML-Group/WAGLE): clip the full gradient, then zero
the masked entries. At ``on_pre_optimizer_step`` the Trainer has clipped already, so the callback
only masks (:func:`geffect.masking.apply_mask_to_gradients`), once per optimizer step. A
:class:`unlearning.callbacks.GEffectCallback` bound to the same trainer applies these masks
itself, after measuring the pre-clip norm on the unmasked gradient and before reading the
gradient, so the G-effect reads ``mask ⊙ pre-clip gradient`` whatever order the callbacks were
added in.
"""
from __future__ import annotations

import logging
import os

import torch
from transformers import TrainerCallback

from geffect.distributed import full_tensor, is_dtensor
from geffect.masking import Mask, apply_mask_to_gradients, check_mask, load_mask
from unlearning.callbacks.clipping import check_backend

logger = logging.getLogger(__name__)

__all__ = ["WeightMaskCallback"]


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
    sharded like each parameter once, at ``on_train_begin``. The callback changes nothing on the
    Trainer or its arguments.
    """

    def __init__(self, mask: Mask | str | os.PathLike, *, strict: bool = False):
        self.source = mask
        self.strict = strict
        self.mask: Mask | None = None
        self._masked_step = -1

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        check_backend(args, model, "WeightMaskCallback")
        mask = load_mask(self.source) if isinstance(self.source, (str, os.PathLike)) else dict(self.source)
        check_mask(mask, model, strict=self.strict)
        params = dict(model.named_parameters())
        self.mask = {n: _place_like(m, params[n]) for n, m in mask.items()}
        self._masked_step = -1
        if args.weight_decay and args.weight_decay > 0:
            logger.warning("weight_decay=%g with a weight mask: AdamW's decoupled decay still shrinks masked weights; "
                           "use weight_decay=0 to keep them fixed", args.weight_decay)
        kept = sum(int(full_tensor(m).sum()) for m in self.mask.values())
        total = sum(m.numel() for m in self.mask.values())
        logger.info("weight mask: %d of %d weights (%.2f%%) may change", kept, total, 100 * kept / max(total, 1))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.apply(model, state.global_step + 1)

    def apply(self, model, step: int) -> None:
        """Zero the masked gradient entries for optimizer step ``step`` (once per step)."""
        if self.mask is None or self._masked_step == step:
            return
        apply_mask_to_gradients(model, self.mask)
        self._masked_step = step


def _place_like(mask: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The bool mask on the parameter's device; a DTensor with its placements under FSDP2."""
    if is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(mask.to(param.to_local().device), param.device_mesh, param.placements)
    return mask.to(param.device)
