"""Token-weight functions for reweighted unlearning objectives.

Every function here is *pure*: it takes token log-likelihoods ``logp`` (B, T) — aligned with
``labels`` as in :mod:`geffect.losses`, i.e. ``logp[b, t] = log p(y_t | x, y_<t)`` — and the
answer mask (B, T) (bool) and returns **detached** weights (B, T), zero off answer tokens,
computed in float32 (float64 if ``logp`` is float64).

Notation: ``p = exp(logp)``, ``ℓ = -logp``. The objectives in :mod:`unlearning.objectives`
use these weights in the token-wise forget loss of SatImp (Yang et al., ICML 2025, Eq. of the
reweighted forget loss)

    L_f = -(1/|T|) Σ_{(b,t) ∈ T} w_bt · ℓ_bt        (w stop-gradient)

so a *larger* weight means the token is pushed *harder* towards being forgotten. All weights
are non-negative; none changes the sign of the update.

Functions and their sources (see docs/objectives.md for the defaults table):

==================  ===========================================  =====================================
function            weight                                       source
==================  ===========================================  =====================================
saturation          p^β                                          SatImp "SimSat" (saturation)
importance          (1 − p)^β                                    SatImp "SimImp" (likelihood importance)
satimp              p^β1 · (1 − p)^β2                            SatImp Eq. (product), β1=5, β2=0.1
wga                 p^β                                          G-effect WGA (same formula as SimSat)
tnpo                2 p^β / (p^β + p_ref^β + 1e-5)               G-effect token-wise NPO
wtnpo               2 p^(β+α) / (p^β + p_ref^β + 1e-5)           G-effect weighted TNPO
hard_sampling       {0, 1}: top-k / bottom-k / random per seq    SatImp Alg. 1 (made symmetric)
apply_granularity   token / instance / group / batch variants    SatImp granularity study
annotated_importance key tokens 1, others p^(1/τ)                 SatImp annotated importance
attribution_importance |grad × embedding| per token, max-normed  SatImp attribution importance
==================  ===========================================  =====================================
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch

from geffect.engine import model_logits
from geffect.losses import answer_mask, compute_dtype, token_logprobs

logger = logging.getLogger(__name__)

__all__ = [
    "saturation",
    "importance",
    "satimp",
    "wga",
    "tnpo",
    "wtnpo",
    "hard_sampling",
    "keep_counts",
    "apply_granularity",
    "group_average",
    "annotated_importance",
    "attribution_importance",
    "GRANULARITIES",
    "HARD_SAMPLING_MODES",
]

GRANULARITIES = ("token", "instance", "group", "batch")
HARD_SAMPLING_MODES = ("topk", "bottomk", "random")

WeightFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- helpers
def _prep(logp: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Detach, promote to the compute dtype, check shapes; returns (logp, bool mask)."""
    if logp.shape != mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)} and mask {tuple(mask.shape)} must have the same shape")
    logp = logp.detach().to(compute_dtype(logp.dtype))
    return logp, mask.to(torch.bool)


def _check_nonneg(**values: float) -> None:
    for k, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")


def _pow_p(logp: torch.Tensor, beta: float) -> torch.Tensor:
    """p^β = exp(β log p), stable for tiny p."""
    return torch.exp(beta * logp)


def _pow_one_minus_p(logp: torch.Tensor, beta: float) -> torch.Tensor:
    """(1 − p)^β with 1 − p = −expm1(log p) (no cancellation when p is small)."""
    one_minus_p = (-torch.expm1(logp)).clamp_min(0)
    return one_minus_p.pow(beta)


def _finish(w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, w, torch.zeros_like(w)).detach()


# --------------------------------------------------------------------------- likelihood weights
def saturation(logp: torch.Tensor, mask: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Saturation weight w = p^β (SatImp "SimSat"): tokens the model still predicts well
    (high p, not yet forgotten / "unsaturated") get large weight.  (B, T), detached."""
    _check_nonneg(beta=beta)
    logp, mask = _prep(logp, mask)
    return _finish(_pow_p(logp, beta), mask)


def importance(logp: torch.Tensor, mask: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Likelihood-based importance w = (1 − p)^β (SatImp "SimImp"): low-likelihood tokens —
    the informative, hard-to-predict ones — get large weight.  (B, T), detached."""
    _check_nonneg(beta=beta)
    logp, mask = _prep(logp, mask)
    return _finish(_pow_one_minus_p(logp, beta), mask)


def satimp(logp: torch.Tensor, mask: torch.Tensor, beta1: float = 5.0, beta2: float = 0.1) -> torch.Tensor:
    """SatImp weight w = p^β1 · (1 − p)^β2 (product of saturation and importance).

    Peaks at p* = β1 / (β1 + β2). Defaults β1 = 5, β2 = 0.1: official tmlr-group/SatImp README.
    """
    _check_nonneg(beta1=beta1, beta2=beta2)
    logp, mask = _prep(logp, mask)
    return _finish(_pow_p(logp, beta1) * _pow_one_minus_p(logp, beta2), mask)


def wga(logp: torch.Tensor, mask: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Weighted gradient ascent (G-effect paper) w = p^β — the same formula as :func:`saturation`."""
    return saturation(logp, mask, beta)


def tnpo(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, beta: float = 4.0) -> torch.Tensor:
    """Token-wise NPO weight (G-effect paper) w = 2 p^β / (p^β + p_ref^β + 1e-5).

    The NPO implicit weight applied per token; p_ref from the frozen reference model.
    """
    _check_nonneg(beta=beta)
    logp, mask = _prep(logp, mask)
    ref = ref_logp.detach().to(logp.dtype)
    if ref.shape != logp.shape:
        raise ValueError(f"ref_logp {tuple(ref.shape)} must match logp {tuple(logp.shape)}")
    pb, rb = _pow_p(logp, beta), _pow_p(ref, beta)
    return _finish(2 * pb / (pb + rb + 1e-5), mask)


def wtnpo(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, beta: float = 4.0, alpha: float = 1.5
) -> torch.Tensor:
    """Weighted token-wise NPO (G-effect paper) w = 2 p^(β+α) / (p^β + p_ref^β + 1e-5)
    = TNPO weight × p^α."""
    _check_nonneg(alpha=alpha)
    w = tnpo(logp, ref_logp, mask, beta)
    return _finish(w * _pow_p(logp.detach().to(w.dtype), alpha), mask.to(torch.bool))


# --------------------------------------------------------------------------- hard sampling
def keep_counts(mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """Tokens kept per sequence: k_i = min(n_i, max(1, ⌊fraction·n_i + 0.5⌋)) (round half up),
    0 for a sequence without answer tokens.  (B,) long."""
    if not isinstance(fraction, (int, float)) or not (0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    n = mask.to(torch.bool).sum(dim=1)  # (B,)
    k = torch.floor(n.to(torch.float64) * fraction + 0.5).to(torch.long).clamp_min(1)
    return torch.minimum(k, n)


def hard_sampling(
    nll: torch.Tensor,
    mask: torch.Tensor,
    fraction: float,
    mode: str = "topk",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Hard-sampling weights in {0, 1} (SatImp Alg. 1, made symmetric).

    Each sequence i keeps exactly ``k_i`` (:func:`keep_counts`) of its n_i answer tokens:
    ``topk`` the highest-loss tokens, ``bottomk`` the lowest-loss tokens, ``random`` a uniform
    random subset drawn from ``generator`` (seed it for reproducibility). Ties are broken by
    position (earlier token first). The official code keeps β for TopK but (1 − β) for BottomK;
    here both keep the same fraction so the two are directly comparable.

    ``nll`` (B, T) is the token loss ℓ = −log p (only its order matters). Returns (B, T), detached.
    """
    if mode not in HARD_SAMPLING_MODES:
        raise ValueError(f"unknown hard-sampling mode {mode!r}; valid: {', '.join(HARD_SAMPLING_MODES)}")
    if nll.shape != mask.shape:
        raise ValueError(f"nll {tuple(nll.shape)} and mask {tuple(mask.shape)} must have the same shape")
    mask = mask.to(torch.bool)
    dtype = compute_dtype(nll.dtype)
    B, T = nll.shape
    k = keep_counts(mask, fraction)  # (B,)
    if mode == "random":
        score = torch.rand(B, T, generator=generator, dtype=torch.float64, device="cpu").to(nll.device)
    elif mode == "topk":
        score = nll.detach().to(torch.float64)
    else:  # bottomk: lowest loss first
        score = -nll.detach().to(torch.float64)
    score = torch.where(mask, score, torch.full_like(score, -math.inf))
    # stable descending sort: among equal scores the earlier position comes first
    order = torch.sort(score, dim=1, descending=True, stable=True).indices  # (B, T)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(T, device=nll.device).expand(B, T))  # (B, T) rank of each position
    keep = (rank < k.unsqueeze(1)) & mask
    return keep.to(dtype).detach()


# --------------------------------------------------------------------------- granularity
def group_average(weights: torch.Tensor, mask: torch.Tensor, group_size: int) -> torch.Tensor:
    """Group granularity: within each sequence, rank the answer tokens by weight (descending,
    ties by position), cut the ranking into chunks of ``group_size`` and replace every weight by
    its chunk mean (the last chunk may be shorter).  (B, T), detached."""
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    mask = mask.to(torch.bool)
    w = weights.detach()
    out = torch.zeros_like(w)
    for b in range(w.shape[0]):  # B is a micro-batch size; per-row work is vectorised
        pos = torch.nonzero(mask[b]).flatten()  # (n,)
        if pos.numel() == 0:
            continue
        vals = w[b, pos]
        order = torch.sort(vals, descending=True, stable=True).indices
        chunk = torch.arange(pos.numel(), device=w.device) // group_size  # chunk id by rank
        sums = torch.zeros(int(chunk.max()) + 1, dtype=w.dtype, device=w.device).index_add_(0, chunk, vals[order])
        cnts = torch.bincount(chunk).to(w.dtype)
        out[b, pos[order]] = (sums / cnts)[chunk]
    return out


def apply_granularity(
    weights_fn: WeightFn,
    logp: torch.Tensor,
    mask: torch.Tensor,
    granularity: str = "token",
    group_size: int = 4,
) -> torch.Tensor:
    """Compute weights at a chosen granularity (SatImp granularity study).

    ``weights_fn(logp, mask) -> (same shape)`` is a likelihood weight such as
    ``functools.partial(saturation, beta=1)``.

    * ``token``: ``weights_fn(logp, mask)``.
    * ``instance``: w_b = weights_fn(log P_b) with P_b = exp(Σ_t logp_bt) the whole answer's
      likelihood, broadcast to the instance's answer tokens.
    * ``group``: token weights, then :func:`group_average` with ``group_size``.
    * ``batch``: one scalar, the mean of the instance weights over instances with answer
      tokens, broadcast to every answer token.

    Returns (B, T) detached, zero off answer tokens.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}")
    logp, mask = _prep(logp, mask)
    if granularity == "token":
        return _finish(weights_fn(logp, mask).to(logp.dtype), mask)
    if granularity == "group":
        return group_average(_finish(weights_fn(logp, mask).to(logp.dtype), mask), mask, group_size)
    has = mask.any(dim=1, keepdim=True)  # (B, 1)
    seq = (logp * mask).sum(dim=1, keepdim=True)  # (B, 1) log P_b
    w_inst = _finish(weights_fn(seq, has).to(logp.dtype), has)  # (B, 1)
    if granularity == "instance":
        return _finish(w_inst.expand_as(logp), mask)
    n_inst = has.sum()
    scalar = w_inst.sum() / n_inst.clamp_min(1)
    return _finish(scalar.expand_as(logp), mask)


# --------------------------------------------------------------------------- annotated importance
def annotated_importance(
    labels: torch.Tensor,
    keywords: Sequence[Sequence[str]],
    tokenizer,
    *,
    allocation: float = 0.3,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Importance from annotated key words (SatImp, annotated importance).

    A *key token* is an answer token whose decoded surface form, stripped of white space, lies
    inside an occurrence of one of the instance's keywords in the answer text. The answer text is
    the concatenation of the tokens' individual decodings, so a keyword split over several
    sub-word tokens marks all of them, while a short token that merely occurs *inside* a keyword
    elsewhere (" is" vs "Paris") is not marked — the reason we match spans rather than test
    ``surface in keyword``. Matching is case-sensitive; a stripped-empty token is never key.

    Key tokens get weight 1, every other answer token ``allocation ** (1 / temperature)``:
    ``allocation`` = p is the share of importance left to non-key tokens and ``temperature`` = τ
    smooths it (w ∝ p^(1/τ); τ → ∞ gives uniform weights, τ → 0 keeps only key tokens).
    Defaults p = 0.3, τ = 1 (non-key tokens weigh 0.3).

    ``labels`` (B, T) as in a batch; ``keywords[b]`` a list of strings. Returns (B, T) float32.
    """
    if not (0 <= allocation <= 1):
        raise ValueError(f"allocation must be in [0, 1], got {allocation!r}")
    if not (temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if len(keywords) != labels.shape[0]:
        raise ValueError(f"need one keyword list per instance: {len(keywords)} lists for batch of {labels.shape[0]}")
    mask = answer_mask(labels)
    other = float(allocation) ** (1.0 / float(temperature))
    w = torch.zeros(labels.shape, dtype=torch.float32)
    for b in range(labels.shape[0]):
        pos = torch.nonzero(mask[b]).flatten().tolist()
        pieces = [tokenizer.decode([int(labels[b, t])]) for t in pos]
        text = "".join(pieces)
        covered = [False] * len(text)  # chars inside a keyword occurrence
        for kw in keywords[b]:
            if not kw:
                continue
            start = text.find(kw)
            while start >= 0:
                covered[start : start + len(kw)] = [True] * len(kw)
                start = text.find(kw, start + 1)
        off = 0
        for t, piece in zip(pos, pieces):
            lo = off + (len(piece) - len(piece.lstrip()))
            hi = off + len(piece.rstrip())
            key = hi > lo and all(covered[lo:hi])
            w[b, t] = 1.0 if key else other
            off += len(piece)
    return w.to(labels.device)


# --------------------------------------------------------------------------- attribution importance
def _answer_logprob_sum(model, input_ids, attention_mask, labels, embeds=None):
    """Summed answer log-likelihood (B,), from token ids or from given input embeddings."""
    if embeds is None:
        logits = model_logits(model, input_ids, attention_mask)  # (B, T, V)
    else:
        logits = model(inputs_embeds=embeds, attention_mask=attention_mask).logits  # (B, T, V)
    return token_logprobs(logits, labels).sum(dim=1)  # (B,)


def attribution_importance(
    model: torch.nn.Module,
    batch: dict,
    *,
    reduce: str = "norm",
    method: str = "direct",
) -> torch.Tensor:
    """Importance from a token attribution (SatImp, attribution-based importance).

    Score of answer token t of instance b: gradient × input embedding at position t of the
    answer log-likelihood log p(y_b | x_b) (target = the instance's own answer), reduced over the
    hidden dimension by the L2 ``norm`` of the product or its ``sum`` (absolute value taken),
    then **normalised per sequence by its maximum** over answer tokens so weights lie in [0, 1]
    like the likelihood weights (a sequence whose scores are all 0 gets weight 0).

    ``method="captum"`` uses ``captum.attr.LayerGradientXActivation`` on the input-embedding
    layer; ``"direct"`` computes the same product with one ``torch.autograd.grad`` call. The
    model's ``.grad`` fields are not touched. Returns (B, T) detached.
    """
    if reduce not in ("norm", "sum"):
        raise ValueError(f"reduce must be 'norm' or 'sum', got {reduce!r}")
    if method not in ("direct", "captum"):
        raise ValueError(f"method must be 'direct' or 'captum', got {method!r}")
    ids, am, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    emb_layer = model.get_input_embeddings()
    if method == "captum":
        from captum.attr import LayerGradientXActivation  # heavy; only method='captum' needs it

        def fwd(input_ids, attention_mask, labels):
            return _answer_logprob_sum(model, input_ids, attention_mask, labels)

        attr = LayerGradientXActivation(fwd, emb_layer).attribute(ids, additional_forward_args=(am, labels))
    else:
        embeds = emb_layer(ids).detach().requires_grad_(True)  # (B, T, H)
        with torch.enable_grad():
            out = _answer_logprob_sum(model, ids, am, labels, embeds=embeds)
            (grad,) = torch.autograd.grad(out.sum(), embeds)
        attr = grad * embeds.detach()  # (B, T, H)
    attr = attr.detach().to(compute_dtype(attr.dtype))
    score = attr.norm(dim=-1) if reduce == "norm" else attr.sum(dim=-1).abs()  # (B, T)
    mask = answer_mask(labels)
    score = torch.where(mask, score, torch.zeros_like(score))
    top = score.amax(dim=1, keepdim=True)  # (B, 1)
    return torch.where(top > 0, score / top.clamp_min(torch.finfo(score.dtype).tiny), torch.zeros_like(score))
