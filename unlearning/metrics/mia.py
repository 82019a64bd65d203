"""Membership-inference attacks (MIA): per-instance scores and the forget-vs-holdout AUC.

Scores follow one sign convention: **higher = looks less like a training member** (a loss-like
score), computed on the answer tokens only, with open-unlearning's token sets
(``src/evals/metrics/utils.py``: ``evaluate_probability`` for LOSS / zlib averages over every
labelled token, the appended EOS included; ``tokenwise_logprobs`` for Min-k% / Min-k%++ drops the
final labelled token, the EOS):

* LOSS      mean answer NLL, EOS included (Yeom et al. 2018)
* zlib      that mean NLL / zlib-compressed length of the answer text in bytes (Carlini et al. 2021)
* Min-k%    minus the mean of the lowest k fraction (k = 0.4) of the answer token log-probs, the
            trailing EOS excluded (Shi et al. 2024)
* Min-k%++  the same over standardised log-probs (log p(x_t) - mu_t) / sigma_t, with mu_t and
            sigma_t^2 the mean and variance of log p(v) under the model's next-token
            distribution p(. | x_<t) (Zhang et al. 2024)

Min-k% and Min-k%++ take ``eos_token_id``: without it (None) the EOS is scored like any token.

``mia_auc(forget, holdout)`` = P(score_holdout > score_forget) + P(tie)/2, the Mann-Whitney rank
statistic (equal to sklearn's ``roc_auc_score`` with holdout labelled 1). A model that
memorised the forget set gives AUC near 1; a model that never saw it gives ~0.5.
``privleak(auc, auc_retain)`` = ((1-AUC) - (1-AUC_ret)) / (1-AUC_ret) * 100 (MUSE), relative
to a retain model's AUC, or to 0.5 when none is given.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from geffect.losses import IGNORE_INDEX, answer_nll, compute_dtype, token_logprobs
from unlearning.metrics.generation import model_max_length
from unlearning.metrics.likelihood import content_mask, forward_logits, resolve_eos_token_id

__all__ = [
    "MIA_ATTACKS",
    "loss_score",
    "zlib_score",
    "min_k_score",
    "min_k_plus_plus_score",
    "mia_scores_from_logits",
    "mia_scores",
    "mia_auc",
    "privleak",
    "text_mia_scores",
]

MIA_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")


def loss_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LOSS attack: mean answer NLL, (N,)."""
    return answer_nll(logits, labels)


def zlib_score(nll: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """zlib attack: mean answer NLL divided by the zlib-compressed byte length of each answer text."""
    if len(texts) != nll.shape[0]:
        raise ValueError(f"{len(texts)} texts for {nll.shape[0]} scores")
    ent = torch.tensor([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=nll.dtype, device=nll.device)
    return nll / ent


def _lowest_k_mean(values: torch.Tensor, mask: torch.Tensor, k: float) -> torch.Tensor:
    """Mean of the lowest max(1, floor(k * n)) masked values of each row, n = its mask count: (B, T) -> (B,)."""
    n = mask.sum(dim=1)  # (B,)
    if bool((n == 0).any()):
        raise ValueError("an instance has no answer tokens; Min-k% is undefined")
    m = torch.clamp((n.to(torch.float64) * k).floor().long(), min=1)  # (B,)
    filled = torch.where(mask, values, torch.full_like(values, math.inf))  # (B, T)
    srt = filled.sort(dim=1).values  # (B, T) ascending, masked-out last
    keep = torch.arange(values.shape[1], device=values.device).unsqueeze(0) < m.unsqueeze(1)  # (B, T)
    return torch.where(keep, srt, torch.zeros_like(srt)).sum(dim=1) / m.to(values.dtype)


def min_k_score(
    logits: torch.Tensor, labels: torch.Tensor, k: float = 0.4, *, eos_token_id: int | None = None
) -> torch.Tensor:
    """Min-k% attack: minus the mean of the lowest k fraction of answer token log-probs (trailing EOS excluded), (N,)."""
    lp = token_logprobs(logits, labels)  # (B, T)
    return -_lowest_k_mean(lp, content_mask(labels, eos_token_id), k)


def min_k_plus_plus_score(
    logits: torch.Tensor, labels: torch.Tensor, k: float = 0.4, *, eos_token_id: int | None = None
) -> torch.Tensor:
    """Min-k%++ attack: minus the mean of the lowest k fraction of standardised token log-probs (trailing EOS excluded), (N,)."""
    B, T, V = logits.shape
    dtype = compute_dtype(logits.dtype)
    mask = content_mask(labels, eos_token_id)  # (B, T)
    z = torch.zeros(B, T, dtype=dtype, device=logits.device)
    logp = torch.log_softmax(logits[:, :-1].to(dtype), dim=-1)  # (B, T-1, V)
    p = logp.exp()
    mu = (p * logp).sum(-1)  # (B, T-1)
    var = (p * logp.pow(2)).sum(-1) - mu.pow(2)  # (B, T-1)
    tok = logp.gather(-1, labels[:, 1:].clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    z[:, 1:] = (tok - mu) / var.clamp_min(1e-12).sqrt()
    return -_lowest_k_mean(z, mask, k)


def mia_scores_from_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    texts: Sequence[str] | None = None,
    *,
    k: float = 0.4,
    eos_token_id: int | None = None,
) -> dict[str, torch.Tensor]:
    """All attack scores from one forward pass: {attack: (N,)}; ``zlib`` only when ``texts`` are given.

    ``eos_token_id``: the answers' trailing EOS, left out of Min-k% / Min-k%++ (not of LOSS / zlib).
    """
    nll = loss_score(logits, labels)
    out = {"loss": nll, "min_k": min_k_score(logits, labels, k, eos_token_id=eos_token_id),
           "min_k_plus_plus": min_k_plus_plus_score(logits, labels, k, eos_token_id=eos_token_id)}
    if texts is not None:
        out["zlib"] = zlib_score(nll, texts)
    return out


@torch.no_grad()
def mia_scores(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    texts: Sequence[str] | None = None,
    *,
    k: float = 0.4,
    eos_token_id: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per-instance MIA scores of ``model`` on ``batch`` (higher = less member-like): {attack: (N,)}.

    ``texts`` are the answer strings (needed for zlib only). The EOS id excluded from Min-k% /
    Min-k%++ defaults to ``model.config.eos_token_id``.
    """
    logits = forward_logits(model, batch)
    return mia_scores_from_logits(logits, batch["labels"].to(logits.device), texts, k=k,
                                  eos_token_id=resolve_eos_token_id(model, eos_token_id))


def mia_auc(scores_forget, scores_holdout) -> float:
    """Rank-based AUC = P(holdout score > forget score) + 0.5 P(tie) (Mann-Whitney U / (n_f n_h))."""
    f = np.asarray(scores_forget, dtype=np.float64).ravel()
    h = np.asarray(scores_holdout, dtype=np.float64).ravel()
    if f.size == 0 or h.size == 0:
        raise ValueError("mia_auc needs at least one forget and one holdout score")
    ranks = rankdata(np.concatenate([f, h]))  # average ranks handle ties
    u = ranks[f.size:].sum() - h.size * (h.size + 1) / 2.0
    return float(u / (f.size * h.size))


def privleak(auc: float, auc_retain: float | None = None) -> float:
    """MUSE PrivLeak in percent: ((1-AUC) - (1-AUC_ret)) / (1-AUC_ret) * 100; AUC_ret defaults to 0.5."""
    ref = 0.5 if auc_retain is None else float(auc_retain)
    if ref >= 1.0:
        raise ValueError("the retain model's AUC is 1, so PrivLeak is undefined (division by zero)")
    return ((1.0 - auc) - (1.0 - ref)) / (1.0 - ref) * 100.0


@torch.no_grad()
def text_mia_scores(
    model, tokenizer, texts: Sequence[str], *, max_length: int | None = None, k: float = 0.4, batch_size: int = 8,
) -> pd.DataFrame:
    """Membership scores of whole texts (higher = less member-like): loss, zlib, min_k, min_k_plus_plus.

    Each text is tokenised with BOS (MUSE: ``tokenizer.encode(text)``), cut to ``max_length``
    tokens (default: the model's context length) and every token after the first is scored.
    Min-K% keeps the lowest ``max(1, floor(k n))`` token log-probs (MUSE: ``int(k n)``, NaN
    when that is 0).
    """
    max_length = max_length or model_max_length(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [list(tokenizer(t, add_special_tokens=True)["input_ids"])[:max_length] for t in texts]
    short = [i for i, e in enumerate(encoded) if len(e) < 2]
    if short:
        raise ValueError(f"texts {short[:5]} have fewer than 2 tokens; membership scores need a token to predict")
    model_was_training = model.training
    model.eval()
    columns: dict[str, list[float]] = {}
    try:
        for s in range(0, len(encoded), batch_size):
            chunk = encoded[s : s + batch_size]
            T = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), T), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(chunk), T), dtype=torch.long)
            for b, e in enumerate(chunk):
                ids[b, : len(e)] = torch.tensor(e)
                labels[b, : len(e)] = torch.tensor(e)
                mask[b, : len(e)] = 1
            batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
            logits = forward_logits(model, batch)
            scores = mia_scores_from_logits(logits, labels.to(logits.device), list(texts[s : s + batch_size]), k=k)
            for name, vals in scores.items():
                columns.setdefault(name, []).extend(vals.double().cpu().tolist())
    finally:
        model.train(model_was_training)
    table = pd.DataFrame({"index": range(len(texts)), "num_tokens": [len(e) for e in encoded]})
    for name in sorted(columns):
        table[f"mia_{name}"] = columns[name]
    return table
