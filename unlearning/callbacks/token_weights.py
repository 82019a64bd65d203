"""Token-weight distributions of a reweighted objective, per optimizer step: :class:`TokenWeightCallback`.

Per optimizer step, the distribution of the objective's token weights over the answer tokens
(:func:`token_weight_stats`) and the mean weight per bin of token likelihood
(:func:`weight_vs_likelihood`) are appended to ``<output_dir>/analysis/token_weights.jsonl`` and
``analysis/weight_vs_likelihood.jsonl`` (JSON lines, main process only; schemas in
docs/training.md). The weights are those :class:`unlearning.training.UnlearningTrainer` keeps in
``step_records``.
"""
from __future__ import annotations

import math
import os

import torch
from transformers import TrainerCallback

from unlearning.runs.folder import RunFolder, append_jsonl

__all__ = ["QUANTILES", "SMALL_WEIGHT", "TokenWeightCallback", "token_weight_stats", "weight_vs_likelihood"]

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
SMALL_WEIGHT = 1e-3


def token_weight_stats(weights: torch.Tensor) -> dict[str, float]:
    """Distribution summary of a 1-D tensor of token weights (answer tokens only).

    Keys: ``n``, ``mean``, ``std``, ``q0 q10 q25 q50 q75 q90 q100``, ``entropy`` (of the
    normalised weights w / sum w, nats; 0·log 0 = 0), ``entropy_norm`` (entropy / log n, 1 =
    uniform), ``frac_small`` (fraction of weights < 1e-3).
    """
    w = weights.detach().double().flatten()
    n = w.numel()
    if n == 0:
        return {"n": 0}
    qs = torch.quantile(w, torch.tensor(QUANTILES, dtype=w.dtype))
    out: dict[str, float] = {"n": n, "mean": float(w.mean()), "std": float(w.std(unbiased=False))}
    out.update({f"q{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)})
    total = w.sum()
    if total > 0:
        q = w / total
        ent = float(-(q[q > 0] * q[q > 0].log()).sum())
    else:
        ent = math.nan
    out["entropy"] = ent
    out["entropy_norm"] = ent / math.log(n) if n > 1 and not math.isnan(ent) else math.nan
    out["frac_small"] = float((w < SMALL_WEIGHT).double().mean())
    return out


def weight_vs_likelihood(weights: torch.Tensor, logprobs: torch.Tensor, bins: int = 10) -> list[dict[str, float]]:
    """Mean weight per bin of token likelihood p = exp(logp): ``bins`` equal bins of [0, 1].

    Returns one dict per bin: ``bin``, ``p_low``, ``p_high``, ``count``, ``mean_weight`` (NaN if
    empty), ``mean_p``. Both inputs are 1-D over the same answer tokens.
    """
    w = weights.detach().double().flatten()
    p = logprobs.detach().double().flatten().exp()
    idx = (p * bins).floor().clamp(0, bins - 1).long()  # p = 1 falls into the last bin
    count = torch.bincount(idx, minlength=bins).double()
    wsum = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, w)
    psum = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, p)
    rows = []
    for b in range(bins):
        c = float(count[b])
        rows.append(
            {
                "bin": b,
                "p_low": b / bins,
                "p_high": (b + 1) / bins,
                "count": int(c),
                "mean_weight": float(wsum[b] / c) if c else math.nan,
                "mean_p": float(psum[b] / c) if c else math.nan,
            }
        )
    return rows


def _gather_cpu(trainer, tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D CPU tensor over all processes (variable lengths; all ranks must call)."""
    if trainer.accelerator.num_processes == 1:
        return tensor
    from accelerate.utils import gather_object

    parts = gather_object([tensor])
    return torch.cat([t.to(tensor.dtype) for t in parts])


class TokenWeightCallback(TrainerCallback):
    """Log the token-weight distribution of every optimizer step (weighted objectives only).

    Uses the forget micro-batches of the step (``trainer.step_records``), gathered from all
    processes, over answer tokens. Objectives without token weights but with instance weights
    (NPO-style) get the same summary over instance weights (``kind = "instance"``, no
    likelihood table); objectives with neither are skipped.
    """

    def __init__(self, trainer, output_dir: str | os.PathLike | None = None, bins: int = 10):
        self.trainer = trainer
        folder = RunFolder(output_dir or trainer.args.output_dir)
        self.weights_path = folder.token_weights
        self.likelihood_path = folder.weight_vs_likelihood
        self.bins = bins

    def on_step_end(self, args, state, control, **kwargs):
        records = self.trainer.step_records
        if not records:
            return
        method = getattr(self.trainer.objective, "name", None)
        step = state.global_step  # the step just taken
        if all(r.token_weights is not None and r.answer_mask is not None for r in records):
            w = torch.cat([r.token_weights[r.answer_mask] for r in records])
            has_lp = all(r.token_logprobs is not None for r in records)
            lp = torch.cat([r.token_logprobs[r.answer_mask] for r in records]) if has_lp else None
            w = _gather_cpu(self.trainer, w)
            lp = _gather_cpu(self.trainer, lp) if lp is not None else None
            kind = "token"
        elif all(r.instance_weights is not None for r in records):
            w = _gather_cpu(self.trainer, torch.cat([r.instance_weights.flatten() for r in records]))
            lp, kind = None, "instance"
        else:
            return
        if not state.is_world_process_zero:
            return
        append_jsonl(self.weights_path, [{"step": step, "method": method, "kind": kind, **token_weight_stats(w)}])
        if lp is not None:
            rows = [{"step": step, "method": method, **r} for r in weight_vs_likelihood(w, lp, self.bins)]
            append_jsonl(self.likelihood_path, rows)
