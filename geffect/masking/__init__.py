"""Weight masks from attribution scores: selection, storage, application and summaries.

A mask is ``{parameter name: bool tensor}`` (True = the weight is *updated*), built from the
scores of :func:`geffect.attribution.attribute_weights` as in WAGLE (Jia et al., NeurIPS
2024), where the density ρ is the fraction of weights that unlearning updates and the
ranking is global over all parameters. One module per job:

- :mod:`geffect.masking.selection`: :func:`weight_mask` keeps exactly ``round(density × n)``
  weights with the highest scores (ties to the lower position), by a streamed radix selection;
- :mod:`geffect.masking.storage`: :func:`save_mask` / :func:`load_mask` (safetensors, atomic,
  any world size), :func:`mask_metadata`, :func:`check_mask`;
- :mod:`geffect.masking.application`: :func:`apply_mask_to_gradients`,
  :func:`masked_direction`, :func:`masked_geffect` (dense vs masked G-effect);
- :mod:`geffect.masking.summaries`: :func:`mask_summary` (kept fraction per group and module
  type), :func:`mask_overlap` (Jaccard index).

Scores and masks may be FSDP2 DTensors (``Shard(0)`` on a 1-D mesh, see
:mod:`geffect.distributed`): then selection, :func:`save_mask`, :func:`mask_summary` and
:func:`mask_overlap` are collective calls, and the result is the single-process one exactly.

Parameters absent from a mask are always trainable: :func:`apply_mask_to_gradients` and
:func:`masked_direction` leave them alone (the Wanda baseline masks Linear weights only).
"""
from geffect.masking.application import apply_mask_to_gradients, masked_direction, masked_geffect
from geffect.masking.selection import SCOPES, Mask, kept_count, weight_mask
from geffect.masking.storage import MASK_FORMAT, check_mask, load_mask, mask_metadata, save_mask
from geffect.masking.summaries import mask_overlap, mask_summary, module_subtype, module_type

__all__ = ["MASK_FORMAT", "SCOPES", "Mask", "apply_mask_to_gradients", "check_mask", "kept_count", "load_mask",
           "mask_metadata", "mask_overlap", "mask_summary", "masked_direction", "masked_geffect", "module_subtype",
           "module_type", "save_mask", "weight_mask"]
