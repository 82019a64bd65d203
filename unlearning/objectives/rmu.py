"""Representation misdirection for unlearning, RMU (Li et al. 2024, WMDP; G-effect paper §RMU).

Forget:  L_f = mean ‖h_l(x_f) − c·u‖² / d
Retain:  L_r = mean ‖h_l(x_r) − h_l^ref(x_r)‖² / d        (retain_loss="repr", the default)

u is drawn once from U[0, 1)^d with a generator seeded by ``seed`` and scaled to unit norm, so
‖c·u‖ = c = ``steer`` (the official ``rmu/unlearn.py`` draws ``torch.rand(1, 1, d)`` and
scales it the same way). The "/ d" is the mean over the hidden dimension of ``F.mse_loss``.

Two conventions, selected with ``preset`` (individual keywords override a preset):

======================  ==========================================  =============================================
hyperparameter          ``preset=None`` / ``"geffect"`` (default)   ``"wmdp"`` (centerforaisafety/wmdp defaults)
======================  ==========================================  =============================================
layer                   7                                            7 (``--layer_id``)
activations             ``"hidden_states"``: ``hidden_states[l+1]``  ``"block"``: output of decoder block l (hook)
tokens                  ``"answer"``: flat mean over answer tokens   ``"all"``: mean over every position, padding too
steer (c)               2 (G-effect release)                         20 (``--steering_coeffs``)
retain_weight (alpha)   1                                            100 (``--alpha``)
update_layers           None (every parameter is trained)            (5, 6, 7) (``--layer_ids``)
update_params           —                                            (6,) (``--param_ids``: index into the block's
                                                                     parameters; ``mlp.down_proj.weight`` in Llama /
                                                                     Mistral / Zephyr blocks)
======================  ==========================================  =============================================

``"wmdp-zephyr"`` is ``"wmdp"`` with c = 6.5 and alpha = 1200, the settings of the released
Zephyr-7B RMU model. ``hidden_states[l + 1]`` equals the output of block l for every block but
the last (Hugging Face applies the final norm before appending the last hidden state).

The loss only *reads* ``update_layers`` / ``update_params``; restricting training to them is
done with :meth:`RMU.trainable_parameter_names`, :meth:`RMU.freeze_untrained` (sets
``requires_grad``) or :meth:`RMU.weight_mask` (for the trainer's ``weight_mask``).
retain_loss may also be "none", "nll" or "kl".
"""
from __future__ import annotations

import torch

from geffect.distributed import is_sharded
from geffect.groups import find_block_list
from geffect.losses import answer_mask, compute_dtype, token_logprobs
from unlearning.objectives.base import ForgetTerm, Objective, register
from unlearning.objectives.forward import count_answer_tokens, hidden_states_output


PRESETS = {
    "geffect": {"layer": 7, "steer": 2.0, "tokens": "answer", "activations": "hidden_states", "retain_weight": 1.0,
                "update_layers": None},
    "wmdp": {"layer": 7, "steer": 20.0, "tokens": "all", "activations": "block", "retain_weight": 100.0,
             "update_layers": (5, 6, 7), "update_params": (6,)},
    "wmdp-zephyr": {"layer": 7, "steer": 6.5, "tokens": "all", "activations": "block", "retain_weight": 1200.0,
                    "update_layers": (5, 6, 7), "update_params": (6,)},
}


def _layer_state(out, layer: int, name: str) -> torch.Tensor:
    hs = out.hidden_states
    if hs is None:
        raise ValueError(f"objective {name!r}: the model returned no hidden_states; it must support output_hidden_states")
    if not (0 <= layer < len(hs) - 1):
        raise ValueError(
            f"objective {name!r}: layer={layer} out of range; this model has {len(hs) - 1} decoder blocks "
            f"(valid layer: 0..{len(hs) - 2})"
        )
    h = hs[layer + 1]
    return h.to(compute_dtype(h.dtype))  # (B, T, d)


def block_output(model, batch: dict, layer: int, *, grad: bool = True):
    """(output of decoder block ``layer`` (B, T, d) in the compute dtype, the model output), via a forward hook."""
    _, blocks = find_block_list(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(
            f"objective 'rmu': layer={layer} out of range; this model has {len(blocks)} decoder blocks "
            f"(valid layer: 0..{len(blocks) - 1})"
        )
    cache: list[torch.Tensor] = []

    def hook(module, args, output):
        cache.append(output[0] if isinstance(output, (tuple, list)) else output)

    handle = blocks[layer].register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            out = hidden_states_output(model, batch)
    finally:
        handle.remove()
    h = cache[0]
    return h.to(compute_dtype(h.dtype)), out


def _masked_mse(diff: torch.Tensor, mask: torch.Tensor, what: str, tokens: str = "answer") -> torch.Tensor:
    """Mean squared entry: flat mean over answer tokens ("answer") or over every position ("all").  diff (B, T, d)."""
    per_tok = diff.pow(2).mean(-1)  # (B, T)
    if tokens == "all":
        return per_tok.mean()
    return (per_tok * mask).sum() / count_answer_tokens(mask, what)


@register
class RMU(Objective):
    name = "rmu"
    defaults = {
        "layer": 7, "steer": 2.0, "seed": 0, "tokens": "answer", "activations": "hidden_states",
        "update_layers": None, "update_params": ("mlp.down_proj.weight",), "preset": None,
    }
    retain_default = "repr"
    retain_options = ("none", "nll", "kl", "repr")

    def __init__(self, **hparams):
        preset = hparams.get("preset")
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"objective 'rmu': unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
            hparams = {**PRESETS[preset], **hparams}
        super().__init__(**hparams)

    def validate(self) -> None:
        hp = self.hparams
        layer = hp["layer"]
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ValueError(f"objective 'rmu': layer must be an int >= 0, got {layer!r}")
        self._num("steer")
        if hp["tokens"] not in ("answer", "all"):
            raise ValueError(f"objective 'rmu': tokens must be 'answer' or 'all', got {hp['tokens']!r}")
        if hp["activations"] not in ("hidden_states", "block"):
            raise ValueError(f"objective 'rmu': activations must be 'hidden_states' or 'block', got {hp['activations']!r}")
        layers = hp["update_layers"]
        if layers is not None:
            if isinstance(layers, int) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers):
                raise ValueError(f"objective 'rmu': update_layers must be None or a sequence of block indices, got {layers!r}")
            hp["update_layers"] = tuple(layers)
        params = hp["update_params"]
        if isinstance(params, (str, int)) or not params or not all(isinstance(p, (str, int)) for p in params):
            raise ValueError(
                f"objective 'rmu': update_params must be a non-empty sequence of parameter names relative to a "
                f"block (e.g. 'mlp.down_proj.weight') or indices into block.parameters(), got {params!r}"
            )
        hp["update_params"] = tuple(params)
        self._control: dict[int, torch.Tensor] = {}

    @property
    def needs_reference(self) -> bool:
        """The forget term needs no reference; the default "repr" retain term (and "kl") do."""
        return self.hparams["retain_loss"] in ("repr", "kl")

    def control_vector(self, d: int) -> torch.Tensor:
        """c · u with u = r / ‖r‖, r ~ U[0, 1)^d from a generator seeded by ``seed``; (d,) float64."""
        if d not in self._control:
            g = torch.Generator().manual_seed(int(self.hparams["seed"]))
            r = torch.rand(d, generator=g, dtype=torch.float64)
            self._control[d] = float(self.hparams["steer"]) * r / r.norm()
        return self._control[d]

    # ---- activations -------------------------------------------------------------------------
    def activations(self, model, batch: dict, *, reference: bool = False):
        """(h_l (B, T, d), model output) under this objective's ``activations`` convention."""
        layer = self.hparams["layer"]
        if self.hparams["activations"] == "block":
            h, out = block_output(model, batch, layer, grad=not reference)
        else:
            out = hidden_states_output(model, batch, reference=reference)
            h = _layer_state(out, layer, self.name)
        if not reference and h.requires_grad and is_sharded(model):
            # FSDP2 (torch 2.13): when a module group is only partly in the backward graph - the final
            # norm feeds hidden_states[-1] while the LM head's logits are unused - and a second forward
            # (the retain term) uses all of it, the backward crashes (SIGSEGV). A zero-weighted use of
            # one logit column puts the whole group in the graph; values and gradients are unchanged.
            h = h + 0.0 * out.logits[..., :1].to(h.dtype).sum()
        return h, out

    def forget_term(self, model, inputs, ref_model) -> ForgetTerm:
        batch = inputs["forget"]
        h, out = self.activations(model, batch)  # (B, T, d)
        mask = answer_mask(batch["labels"])
        target = self.control_vector(h.shape[-1]).to(device=h.device, dtype=h.dtype)  # (d,)
        loss = _masked_mse(h - target, mask, "forget", self.hparams["tokens"])
        return ForgetTerm(
            loss=loss, token_logprobs=token_logprobs(out.logits, batch["labels"]).detach(), answer_mask=mask
        )

    def retain_term(self, model, inputs, ref_model):
        if self.hparams["retain_loss"] != "repr":
            return super().retain_term(model, inputs, ref_model)
        if inputs.get("retain") is None:
            raise ValueError("objective 'rmu' with retain_loss='repr' needs inputs['retain']; pass one or use retain_loss='none'")
        batch = inputs["retain"]
        h, _ = self.activations(model, batch)
        with torch.no_grad():
            h_ref, _ = self.activations(ref_model, batch, reference=True)
        return _masked_mse(h - h_ref.to(h.dtype), answer_mask(batch["labels"]), "retain", self.hparams["tokens"])

    # ---- which parameters RMU updates ------------------------------------------------------
    def trainable_parameter_names(self, model) -> list[str]:
        """Names (``model.named_parameters()``) of the parameters this configuration updates.

        ``update_layers=None``: every parameter. Otherwise, for each block index in
        ``update_layers``, the block parameters named (relative to the block) or indexed (in
        ``block.parameters()`` order, the official ``--param_ids``) by ``update_params``.
        """
        if self.hparams["update_layers"] is None:
            return [n for n, _ in model.named_parameters()]
        prefix, blocks = find_block_list(model)
        names = []
        for i in self.hparams["update_layers"]:
            if i >= len(blocks):
                raise ValueError(f"objective 'rmu': update_layers has {i} but the model has {len(blocks)} blocks")
            block_names = [n for n, _ in blocks[i].named_parameters()]
            for p in self.hparams["update_params"]:
                if isinstance(p, int):
                    if not 0 <= p < len(block_names):
                        raise ValueError(f"objective 'rmu': parameter index {p} out of range for block {i} ({len(block_names)} parameters)")
                    rel = block_names[p]
                elif p in block_names:
                    rel = p
                else:
                    raise ValueError(f"objective 'rmu': block {i} has no parameter {p!r}; its parameters: {block_names}")
                names.append(f"{prefix}.{i}.{rel}")
        return names

    def freeze_untrained(self, model) -> list[str]:
        """Set ``requires_grad`` True on :meth:`trainable_parameter_names`, False elsewhere; returns the names."""
        keep = set(self.trainable_parameter_names(model))
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)
        return sorted(keep)

    def weight_mask(self, model) -> dict[str, torch.Tensor]:
        """``{name: bool tensor}`` (True = may change) for the trainer's ``weight_mask`` argument."""
        keep = set(self.trainable_parameter_names(model))
        return {n: torch.full_like(p, n in keep, dtype=torch.bool) for n, p in model.named_parameters()}
