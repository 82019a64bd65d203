"""``wanda``: |W_ij| · ‖X_j‖₂ for Linear weights (Sun et al., "A Simple and Effective Pruning Approach
for Large Language Models", ICLR 2024; a baseline of WAGLE, Jia et al., NeurIPS 2024).

X_j is input feature j of the layer over all non-padding forget tokens; only the Linear-like
weights of the decoder blocks are scored (:func:`linear_weights`), no other tensor. WAGLE's
Wanda baseline ranks per output row, so :func:`geffect.attribution.attribute_and_save` uses
``scope="row"`` for it by default.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from geffect.attribution.calibration import Batch, progress_bar, synced, unpack
from geffect.attribution.registry import ScoringContext, register_scorer
from geffect.distributed import all_reduce_sum, common_group, is_dtensor, local, local_rows, reshard, wrap_like
from geffect.engine import model_logits
from geffect.losses import compute_dtype

logger = logging.getLogger(__name__)

__all__ = ["linear_weights", "wanda_scores"]


@register_scorer("wanda", scope="row")
def wanda_scores(ctx: ScoringContext) -> dict[str, torch.Tensor]:
    """|W_ij| · ‖X_j‖₂ with ‖X_j‖ over every non-padding forget token (float32, float64 for float64 weights).

    FSDP2 models: the squared feature norms are summed over ranks (all-reduce) and each rank
    scores its own rows of the weights.
    """
    batches = ctx.batches("forget")
    if ctx.retain_batches is not None:
        logger.info("wanda uses forget activations only; retain_batches is ignored")
    named = ctx.params
    modules = linear_weights(ctx.model, named)
    if not modules:
        raise ValueError("wanda found no nn.Linear / Conv1D weight among the selected parameters")
    sharded = any(is_dtensor(named[n]) for n in modules)
    group = common_group(named[n] for n in modules)
    sq = _input_square_sums(ctx.model, named, modules, batches, group if sharded else None, progress=ctx.progress)
    scores = {}
    for n, mod in modules.items():
        w = local(named[n]).detach()
        if sharded:  # Σ over every rank's tokens; a rank without tokens contributes zeros
            in_features = named[n].shape[0] if _is_conv1d(mod) else named[n].shape[1]
            if sq[n] is None:
                sq[n] = torch.zeros(in_features, dtype=compute_dtype(w.dtype), device=w.device)
            all_reduce_sum(sq[n], group)
        elif sq[n] is None:
            raise ValueError(f"wanda: module {n!r} was never called during the calibration pass")
        norm = sq[n].sqrt()  # (in,)
        w = w.abs().to(norm.dtype)
        # nn.Linear weight is (out, in); Conv1D weight is (in, out), sharded rows = input features
        if _is_conv1d(mod):
            s = w * local_rows(norm, named[n]).unsqueeze(1)
        else:
            s = w * norm.unsqueeze(0)
        scores[n] = wrap_like(s, named[n])
    return scores


def _input_square_sums(model: nn.Module, named: Mapping[str, nn.Parameter], modules: Mapping[str, nn.Module],
                       batches: Iterable[Batch], group, *, progress: bool) -> dict[str, torch.Tensor | None]:
    """Σ over this rank's non-padding tokens of x_j², per Linear weight name: (in_features,) or None
    for a module never called; one no-grad forward per batch, in eval mode (restored after).

    ``group`` (FSDP2): the forwards are collectives, so a rank out of batches keeps joining the
    others' forwards with a one-token pass that records nothing.
    """
    sq: dict[str, torch.Tensor | None] = {n: None for n in modules}  # Σ_tokens x_j², (in_features,)
    current_mask: list[torch.Tensor | None] = [None]
    capturing = [True]

    def make_hook(name):
        dtype = compute_dtype(named[name].dtype)

        def hook(module, inputs, output):
            if not capturing[0]:
                return
            x = inputs[0]  # (B, T, in)
            m = current_mask[0]
            if m is not None and x.dim() == 3 and m.shape == x.shape[:2]:
                x = x[m]  # (n_tokens, in) non-padding tokens only
            x = x.reshape(-1, x.shape[-1]).to(dtype)  # (n_tokens, in)
            s = x.pow(2).sum(dim=0)  # (in,)
            sq[name] = s if sq[name] is None else sq[name].add_(s)
        return hook

    handles = [mod.register_forward_hook(make_hook(n)) for n, mod in modules.items()]
    device = local(next(iter(named.values()))).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            stream = progress_bar(batches, progress, "forget")
            for batch in (synced(stream, group) if group is not None else stream):
                if batch is None:  # FSDP2: this rank has no batch left, the others have
                    capturing[0] = False
                    model_logits(model, torch.zeros((1, 1), dtype=torch.long, device=device), None)
                    capturing[0] = True
                    continue
                input_ids, attention_mask, _ = unpack(batch, device)
                current_mask[0] = attention_mask.bool() if attention_mask is not None else None
                model_logits(model, input_ids, attention_mask)  # the hooks record the inputs
    finally:
        for h in handles:
            h.remove()
        if group is not None:
            reshard(model)  # a forward without backward leaves FSDP2's root unsharded
        model.train(was_training)
    return sq


def linear_weights(model: nn.Module, named: Mapping[str, nn.Parameter] | None = None) -> dict[str, nn.Module]:
    """The Linear-like modules that Wanda scores: ``{weight name: module}``.

    Every ``nn.Linear`` and transformers ``Conv1D`` (GPT-2; weight stored (in, out)) except the
    output head (``model.get_output_embeddings()``), i.e. the Linear layers of the decoder
    blocks for the usual HF models. Restricted to ``named`` when given.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out: dict[str, nn.Module] = {}
    for mname, module in model.named_modules():
        if module is head or not _is_linear_like(module):
            continue
        wname = f"{mname}.weight" if mname else "weight"
        if named is None or wname in named:
            out[wname] = module
    return out


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _is_linear_like(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return (isinstance(module, nn.Linear) or _is_conv1d(module)) and isinstance(w, torch.Tensor) and w.dim() == 2
