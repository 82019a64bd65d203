"""Negative preference optimisation: NPO (Zhang et al. 2024) and SimNPO (Fan et al. 2024).

NPO   L_f = −(2/β) mean_b log σ(β (NLL_θ(y_b|x_b) − NLL_ref(y_b|x_b)))     sequence-summed NLL
SimNPO L_f = −(2/β) mean_b log σ(β (NLL_θ(y_b|x_b)/|y_b| − δ))             no reference

Gradient: ∇L_f = −(1/B) Σ_b w_b ∇NLL_θ(y_b|x_b) (SimNPO: divided by |y_b|) with the implicit
instance weight (G-effect paper, NPO analysis)

    NPO:    w_b = 2 p_θ^β / (p_θ^β + p_ref^β) = 2 σ(β (log p_θ − log p_ref))
    SimNPO: w_b = 2 σ(β (δ − NLL_θ/|y_b|))

with p = p(y_b|x_b) the whole answer's likelihood. ``instance_weights`` holds w_b and
``token_weights`` broadcasts w_b to the instance's answer tokens (for weight-vs-likelihood
plots; the loss itself is not token-reweighted). Minimising L_f raises NLL_θ; w_b → 0 once the
answer is much less likely than under the reference (or than exp(−δ) per token).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearning.objectives.base import ForgetTerm, Objective, register
from unlearning.objectives.forward import batch_logprobs, count_answer_tokens, reference_logprobs


def sigmoid_preference_term(margin: torch.Tensor, beta: float, logp: torch.Tensor, mask: torch.Tensor) -> ForgetTerm:
    """The shared NPO / SimNPO / IdkDPO form: L_f = −(2/β) mean_b log σ(β m_b).

    Its gradient weights instance b by w_b = 2 σ(−β m_b) (returned detached as
    ``instance_weights`` and broadcast to the answer tokens of ``mask``). ``margin`` is (B,),
    ``logp`` and ``mask`` are the forget batch's (B, T) token log-probs and answer mask.
    """
    loss = -(2.0 / beta) * F.logsigmoid(beta * margin).mean()
    w = (2 * torch.sigmoid(-beta * margin.detach())).detach()  # (B,)
    return ForgetTerm(
        loss=loss,
        token_weights=(w[:, None] * mask).detach(),
        instance_weights=w,
        token_logprobs=logp.detach(),
        answer_mask=mask,
    )


@register
class NPO(Objective):
    name = "npo"
    requires_reference = True
    defaults = {"beta": 0.1}

    def validate(self) -> None:
        self._num("beta", positive=True)

    def forget_term(self, model, inputs, ref_model) -> ForgetTerm:
        batch = inputs["forget"]
        beta = self._num("beta")
        logp, mask = batch_logprobs(model, batch)  # (B, T)
        count_answer_tokens(mask, "forget")
        ref = reference_logprobs(ref_model, batch)  # (B, T)
        seq = logp.sum(1)  # (B,) log p_θ(y|x) = −NLL_θ
        seq_ref = ref.sum(1).to(seq.dtype)  # (B,)
        return sigmoid_preference_term(seq_ref - seq, beta, logp, mask)


@register
class SimNPO(Objective):
    name = "simnpo"
    defaults = {"beta": 4.5, "delta": 0.0}

    def validate(self) -> None:
        self._num("beta", positive=True)
        self._num("delta")

    def forget_term(self, model, inputs, ref_model) -> ForgetTerm:
        batch = inputs["forget"]
        beta, delta = self._num("beta"), self._num("delta")
        logp, mask = batch_logprobs(model, batch)  # (B, T)
        count_answer_tokens(mask, "forget")
        n = mask.sum(1).clamp_min(1).to(logp.dtype)  # (B,) |y_b|
        mean_nll = -logp.sum(1) / n  # (B,)
        return sigmoid_preference_term(mean_nll - delta, beta, logp, mask)
