"""Representation misdirection for unlearning, RMU (Li et al. 2024, WMDP; G-effect paper §RMU).

Forget:  L_f = mean_T ‖h_l(x_f) − c·u‖² / d
Retain:  L_r = mean_T ‖h_l(x_r) − h_l^ref(x_r)‖² / d        (retain_loss="repr", the default)

h_l is the output of decoder block ``layer`` (0-based), i.e. ``hidden_states[layer + 1]`` of a
Hugging Face model called with ``output_hidden_states=True`` (``hidden_states[0]`` is the
embedding output). u is drawn once from U[0, 1)^d with a generator seeded by ``seed`` and
scaled to unit norm; c = ``steer``. Means run over the answer tokens of the micro-batch (flat)
and, as in the official code (``F.mse_loss``), over the hidden dimension d — hence the "/ d".
Defaults: layer 7 (WMDP / open-unlearning hook ``layers.7``), steer 2 (G-effect release);
retain weight 1. Training only a few layers, as the official RMU does, is the trainer's job.
retain_loss may also be "none", "nll" or "kl".
"""
from __future__ import annotations

import torch

from geffect.losses import answer_mask, compute_dtype, token_logprobs
from unlearning.objectives.base import ForgetTerm, Objective, register
from unlearning.objectives.forward import count_answer_tokens, hidden_states_output


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


def _masked_mse(diff: torch.Tensor, mask: torch.Tensor, what: str) -> torch.Tensor:
    """flat mean over answer tokens of the per-token mean squared entry.  diff (B, T, d)."""
    per_tok = diff.pow(2).mean(-1)  # (B, T)
    return (per_tok * mask).sum() / count_answer_tokens(mask, what)


@register
class RMU(Objective):
    name = "rmu"
    defaults = {"layer": 7, "steer": 2.0, "seed": 0}
    retain_default = "repr"
    retain_options = ("none", "nll", "kl", "repr")

    def validate(self) -> None:
        layer = self.hparams["layer"]
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ValueError(f"objective 'rmu': layer must be an int >= 0, got {layer!r}")
        self._num("steer")
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

    def forget_term(self, model, inputs, ref_model) -> ForgetTerm:
        batch = inputs["forget"]
        out = hidden_states_output(model, batch)
        h = _layer_state(out, self.hparams["layer"], self.name)  # (B, T, d)
        mask = answer_mask(batch["labels"])
        target = self.control_vector(h.shape[-1]).to(device=h.device, dtype=h.dtype)  # (d,)
        loss = _masked_mse(h - target, mask, "forget")
        return ForgetTerm(
            loss=loss, token_logprobs=token_logprobs(out.logits, batch["labels"]).detach(), answer_mask=mask
        )

    def retain_term(self, model, inputs, ref_model):
        if self.hparams["retain_loss"] != "repr":
            return super().retain_term(model, inputs, ref_model)
        if inputs.get("retain") is None:
            raise ValueError("objective 'rmu' with retain_loss='repr' needs inputs['retain']; pass one or use retain_loss='none'")
        batch = inputs["retain"]
        h = _layer_state(hidden_states_output(model, batch), self.hparams["layer"], self.name)
        h_ref = _layer_state(hidden_states_output(ref_model, batch, reference=True), self.hparams["layer"], self.name)
        return _masked_mse(h - h_ref.to(h.dtype), answer_mask(batch["labels"]), "retain")
