"""Token attributions of forget answers with captum: which answer tokens does the model rely on?

For one QA example, the target is the summed answer log-likelihood log p(y | x) (the
quantity unlearning pushes down). ``captum.attr.LayerIntegratedGradients`` on the input
embedding layer attributes it to every input position (baseline: the pad token's
embedding, integral over ``n_steps`` points); the attribution of a position is the sum over
the hidden dimension. Only answer positions (:func:`geffect.answer_mask`) are returned. Running it on
the target model and on each unlearned model shows which answer tokens still carry the
answer's likelihood after unlearning (plot 8 of the study)::

    from analyses.attributions import token_attributions
    frame = token_attributions(model, tokenizer, examples, model_name="ga")
    # columns: example, model, position, token, attribution
"""
from __future__ import annotations

import logging
from typing import Sequence

import pandas as pd
import torch
from captum.attr import LayerIntegratedGradients

from geffect import IGNORE_INDEX, answer_logprob, answer_mask, model_logits

logger = logging.getLogger(__name__)


def _forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed answer log-likelihood per row, (B,) (captum repeats the extra args per step)."""
    logits = model_logits(model, input_ids, attention_mask)  # (B, T, V)
    return answer_logprob(logits, labels)


def token_attributions(model, tokenizer, examples: Sequence[dict[str, torch.Tensor]], *, model_name: str,
                       n_steps: int = 16, internal_batch_size: int = 16) -> pd.DataFrame:
    """Integrated-gradients attribution of each answer token's embedding to log p(answer | question).

    ``examples``: items of ``unlearning.data.QADataset`` (1-D ``input_ids``, ``attention_mask``,
    ``labels``; an ``index`` key is used as the example id when present). Returns a tidy frame
    ``example, model, position, token, attribution`` over answer positions (position 0 = the
    first answer token). The model's train/eval mode is restored afterwards.
    """
    device = next(model.parameters()).device
    embeddings = model.get_input_embeddings()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lig = LayerIntegratedGradients(lambda ids, am, lab: _forward(model, ids, am, lab), embeddings)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for k, ex in enumerate(examples):
            ids = ex["input_ids"].reshape(1, -1).to(device)  # (1, T)
            am = ex["attention_mask"].reshape(1, -1).to(device)
            labels = ex["labels"].reshape(1, -1).to(device)
            baseline = torch.where(labels == IGNORE_INDEX, ids, torch.full_like(ids, pad_id))  # keep the prompt
            attr = lig.attribute(ids, baselines=baseline, additional_forward_args=(am, labels),
                                 n_steps=n_steps, internal_batch_size=internal_batch_size)  # (1, T, C)
            per_token = attr.sum(dim=-1)[0].detach().float().cpu()  # (T,)
            answer = answer_mask(labels)[0].nonzero().flatten().tolist()
            example_id = int(ex["index"]) if "index" in ex else k
            for pos, t in enumerate(answer):
                token = tokenizer.decode([int(ids[0, t])])
                rows.append((example_id, model_name, pos, token, float(per_token[t])))
    finally:
        model.train(was_training)
    return pd.DataFrame(rows, columns=["example", "model", "position", "token", "attribution"])
