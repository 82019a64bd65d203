"""Preference-style forgetting with refusal ("I don't know") answers: IdkPO and IdkDPO.

idk (PO in the G-effect paper): L_f = (1/|T_idk|) Σ ℓ_i — the flat-mean NLL of a refusal answer
to the forget question (``inputs["idk"]``), *minimised* (it teaches the refusal; it does not
push the forget answer down directly, so it has no token weights on the forget batch).

dpo (IdkDPO, Rafailov et al. 2023 with preferred = refusal, dispreferred = forget answer):

    m_b = [log p_θ(idk_b) − log p_ref(idk_b)] − [log p_θ(y_b) − log p_ref(y_b)]   (summed log-probs)
    L_f = −(2/β) mean_b log σ(β m_b)

∇L_f = −(1/B) Σ_b w_b (∇log p_θ(idk_b) − ∇log p_θ(y_b)) with w_b = 2 σ(−β m_b), returned as
``instance_weights`` (and broadcast to the forget answer tokens as ``token_weights``).
Requires ``inputs["idk"]`` aligned row by row with ``inputs["forget"]`` and a reference model.
"""
from __future__ import annotations

from unlearning.objectives.base import ForgetTerm, Objective, register
from unlearning.objectives.forward import batch_logprobs, count_answer_tokens, reference_logprobs
from unlearning.objectives.npo import sigmoid_preference_term


def _idk_batch(name: str, inputs: dict) -> dict:
    if inputs.get("idk") is None:
        raise ValueError(
            f"objective {name!r} needs inputs['idk'] (forget questions with refusal answers); "
            "build the dataset with ForgetRetainDataset(..., idk_answers=load_idk_answers())"
        )
    return inputs["idk"]


@register
class Idk(Objective):
    name = "idk"
    needs_refusal = True

    def forget_term(self, model, inputs, ref_model) -> ForgetTerm:
        batch = _idk_batch(self.name, inputs)
        logp, mask = batch_logprobs(model, batch)  # (B, T) on the refusal answers
        n = count_answer_tokens(mask, "idk")
        return ForgetTerm(loss=-(logp * mask).sum() / n)


@register
class DPO(Objective):
    name = "dpo"
    requires_reference = True
    needs_refusal = True
    defaults = {"beta": 0.1}

    def validate(self) -> None:
        self._num("beta", positive=True)

    def forget_term(self, model, inputs, ref_model) -> ForgetTerm:
        beta = self._num("beta")
        fb, ib = inputs["forget"], _idk_batch(self.name, inputs)
        if fb["input_ids"].shape[0] != ib["input_ids"].shape[0]:
            raise ValueError("inputs['idk'] must have one row per forget row (same batch size)")
        lp_l, mask = batch_logprobs(model, fb)  # (B, T) dispreferred: forget answer
        lp_w, mask_w = batch_logprobs(model, ib)  # (B, T) preferred: refusal
        count_answer_tokens(mask, "forget")
        count_answer_tokens(mask_w, "idk")
        ref_l = reference_logprobs(ref_model, fb).sum(1).to(lp_l.dtype)  # (B,)
        ref_w = reference_logprobs(ref_model, ib).sum(1).to(lp_l.dtype)  # (B,)
        margin = (lp_w.sum(1) - ref_w) - (lp_l.sum(1) - ref_l)  # (B,)
        return sigmoid_preference_term(margin, beta, lp_l, mask)
