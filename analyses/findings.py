"""Findings of the G-effect study: each one tests a claim of a paper against the study's data.

Every finding names the claim it tests and its source, states the numbers computed from the
tidy frames (schemas in :mod:`analyses.frames`), and gives a verdict: ``supports``,
``contradicts``, ``inconclusive`` (the data cannot decide) or ``describes`` (a measurement
no paper makes a claim about). Nothing here holds by construction:

- G-effects are compared across objectives only in scale-free form: within one method (a
  ratio of its own values over steps or probes), or per unit of update norm (``per_norm`` =
  e / ||d||; at step 1 every method starts from the same weights, so this is ||∇R|| cos of the
  angle between the update and the probe gradient). Raw magnitudes are not ranked across
  methods (NPO sums token NLLs, GA averages them; p^5-weighted objectives have tiny gradients).
- A weight is related to a likelihood only when the weight is not computed from that
  likelihood alone (NPO's instance weights, TNPO's weights after step 1, where p ≠ p_ref);
  saturation / importance weights are functions of the logged likelihood by definition.
- Methods are compared at matched utility along their trajectories (forget ES where retain ES
  falls to ``budget`` × the target's), not at one point of one learning rate.

When the sanity gate (:mod:`analyses.gate`) fails, the findings that presume a subject that
memorised the forget set are skipped and one finding says why::

    from analyses.findings import compute_findings
    for f in compute_findings(frames, gate=gate):
        print(f.verdict, f.claim, f.text)
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Collection, Mapping

import numpy as np
import pandas as pd

from geffect import LAYER_BUCKETS, layer_buckets

logger = logging.getLogger(__name__)

__all__ = ["Finding", "compute_findings", "matched_point", "FINDINGS"]

Frames = Mapping[str, pd.DataFrame]
GEFFECT = "G-effect (Wang et al., ICLR 2025)"
SATIMP = "SatImp (Yang et al., ICML 2025)"
WAGLE = "WAGLE (Jia et al., NeurIPS 2024)"


@dataclass
class Finding:
    """One finding: a stable ``key``, the claim it tests, the sentence with the numbers, the verdict."""

    key: str
    claim: str
    text: str
    verdict: str  # supports | contradicts | inconclusive | describes
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _has(frames: Frames, name: str, columns: list[str]) -> pd.DataFrame | None:
    frame = frames.get(name)
    if frame is None or frame.empty or any(c not in frame.columns for c in columns):
        return None
    return frame


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1])


def _wide_steps(steps: pd.DataFrame, method: str, value: str = "value") -> pd.DataFrame:
    wide = steps[steps["method"] == method].pivot_table(index="step", columns="probe", values=value)
    return wide.sort_index()


# --------------------------------------------------------------------------- G-effect paper
def ga_retain_mirrors_unlearning(frames: Frames, **_: Any) -> list[Finding]:
    steps = _has(frames, "geffect_steps", ["method", "step", "probe", "value"])
    if steps is None or "ga" not in set(steps["method"]):
        return []
    wide = _wide_steps(steps, "ga")
    if not {"forget", "retain"} <= set(wide.columns):
        return []
    first = wide.iloc[0]
    r = (float(np.corrcoef(wide["forget"], wide["retain"])[0, 1])
         if len(wide) >= 3 and wide["retain"].std() > 0 and wide["forget"].std() > 0 else float("nan"))
    ratio = abs(first["retain"]) / abs(first["forget"]) if first["forget"] else float("nan")
    neg_steps = int(((wide["forget"] < 0) & (wide["retain"] < 0)).sum())
    both_neg = neg_steps * 2 > len(wide)  # at most tracked steps, not only the first (near-zero) one
    if not both_neg or (not math.isnan(r) and r < 0):
        verdict = "contradicts"
    elif math.isnan(r) or r > 0.5:
        verdict = "supports"
    else:
        verdict = "inconclusive"
    text = (f"GA at step 1: unlearning G-effect {_fmt(first['forget'])}, retaining {_fmt(first['retain'])} "
            f"(|retaining| / |unlearning| = {_fmt(ratio)}); both negative at {neg_steps} of {len(wide)} tracked "
            f"steps; Pearson r between them across steps = {r:.2f}. Criterion: supported when both are negative at "
            "most tracked steps and move together (r > 0.5).")
    return [Finding("ga_mirror", f"{GEFFECT}: GA's retaining G-effect mirrors its unlearning one (both negative, "
                    "moving together: GA damages retained knowledge as it forgets).", text, verdict,
                    {"step1": first.to_dict(), "ratio": ratio, "corr": r})]


def layers_carrying_unlearning(frames: Frames, **_: Any) -> list[Finding]:
    layers = _has(frames, "geffect_layers", ["method", "step", "probe", "group", "value"])
    if layers is None:
        return []
    forget = layers[layers["probe"] == "forget"]
    per_group = forget.groupby(["method", "group"], as_index=False)["value"].sum()
    per_group["bucket"] = per_group["group"].map(layer_buckets(per_group["group"]))
    per_group["abs"] = per_group["value"].abs()
    share = (per_group.groupby(["method", "bucket"])["abs"].sum()
             / per_group.groupby("method")["abs"].sum()).unstack(fill_value=0.0)
    mean = share.mean().reindex([b for b in LAYER_BUCKETS if b in share.columns])
    if not {"shallow", "middle", "deep"} <= set(mean.index):
        return [Finding("layers_unlearning", f"{GEFFECT}: shallow decoder layers carry most of the unlearning "
                        "G-effect.", "The model has fewer than three decoder layers, so shallow, middle and deep "
                        "thirds cannot be told apart.", "inconclusive", {"bucket_share": mean.to_dict()})]
    decoder = mean[["shallow", "middle", "deep"]]
    top = decoder.idxmax()
    top_per_method = share[["shallow", "middle", "deep"]].idxmax(axis=1)
    embed = float(mean.get("embed", 0.0))
    verdict = "supports" if top == "shallow" and embed < 0.1 else "contradicts"
    text = (f"Share of the absolute unlearning G-effect (summed over steps, mean over {len(share)} methods): "
            + ", ".join(f"{b} {mean[b]:.0%}" for b in mean.index)
            + f". The {top} third leads for {int((top_per_method == top).sum())} of {len(share)} methods "
              f"({', '.join(f'{m}: {b}' for m, b in top_per_method.items())}). Embedding share "
              f"{embed:.1%}. Criterion: supported when the shallow third leads and the embedding carries "
              "under 10%.")
    out = [Finding("layers_unlearning", f"{GEFFECT}: the shallow decoder layers carry the largest share of the "
                   "unlearning G-effect and the embedding a negligible one.", text, verdict,
                   {"bucket_share": mean.to_dict(), "top_per_method": top_per_method.to_dict()})]
    modules = _has(frames, "geffect_modules", ["method", "probe", "module", "value"])
    if modules is not None:
        f = modules[modules["probe"] == "forget"].groupby(["method", "module"])["value"].sum().abs()
        mshare = (f / f.groupby("method").transform("sum")).unstack(fill_value=0.0)
        m = mshare.mean()
        lead = mshare.idxmax(axis=1)
        out.append(Finding("attn_vs_mlp", "Attention vs MLP inside the decoder layers (the G-effect paper reports "
                           "layers, not module types: a measurement, not a test).",
                           "Share of the absolute unlearning G-effect inside decoder layers: "
                           + ", ".join(f"{k} {v:.0%}" for k, v in m.sort_values(ascending=False).items())
                           + f"; MLP leads for {int((lead == 'mlp').sum())} of {len(lead)} methods.", "describes",
                           {"module_share": m.to_dict()}))
    return out


def weighting_shrinks_geffect(frames: Frames, **_: Any) -> list[Finding]:
    steps = _has(frames, "geffect_steps", ["method", "step", "probe", "value"])
    if steps is None or "ga" not in set(steps["method"]):
        return []

    def late_over_early(method: str) -> float:
        f = _wide_steps(steps, method)["forget"].abs()
        k = max(1, len(f) // 3)
        return float(f.iloc[-k:].mean() / f.iloc[:k].mean()) if len(f) >= 2 and f.iloc[:k].mean() > 0 else math.nan

    ga = late_over_early("ga")
    weighted = {m: late_over_early(m) for m in ("npo", "tnpo", "wga") if m in set(steps["method"])}
    weighted = {m: v for m, v in weighted.items() if not math.isnan(v)}
    if not weighted or math.isnan(ga):
        return []
    pg = _has(frames, "pg_effects", ["method", "step", "weight"])
    weight_trend = {}
    if pg is not None:
        for m in weighted:
            w = pg[pg["method"] == m].groupby("step")["weight"].mean().sort_index()
            if len(w) >= 2:
                weight_trend[m] = (float(w.iloc[0]), float(w.iloc[-1]))
    shrink = [m for m, v in weighted.items() if v < 1 <= ga or (v < 1 and v < ga)]
    slower = [m for m, v in weighted.items() if v < ga]
    fell = _likelihood_fall(frames)
    if fell is not None and fell < 0.1:
        verdict = "inconclusive"  # the forget likelihood hardly moved: nothing to shrink with
    elif len(shrink) == len(weighted):
        verdict = "supports"
    elif not slower:
        verdict = "contradicts"
    else:
        verdict = "inconclusive"
    text = (f"|Unlearning G-effect| of the last third of tracked steps over the first third (each method against "
            f"itself, so scale-free): GA ×{_fmt(ga)}, " + ", ".join(f"{m} ×{_fmt(v)}" for m, v in weighted.items())
            + ". " + (" ".join(f"Mean {m} weight on the forget probe: {a:.3g} → {b:.3g}." for m, (a, b) in
                                weight_trend.items()) if weight_trend else "")
            + (f" The forget-probe token likelihood fell by {fell:.0%} over the run." if fell is not None else "")
            + " Criterion: supported when every weighted method's ratio is below 1 (its G-effect shrinks), "
              "contradicted when none grows more slowly than GA's.")
    return [Finding("weighting_shrinks", f"{GEFFECT}: likelihood-based weighting (NPO, TNPO, WGA) shrinks the "
                    "unlearning G-effect as the forget likelihood falls, where GA's keeps growing.", text, verdict,
                    {"late_over_early": {"ga": ga, **weighted}, "weight_trend": weight_trend})]


def _likelihood_fall(frames: Frames) -> float | None:
    """Relative fall of the mean forget-probe token likelihood between the first and last tracked step (GA)."""
    tw = _has(frames, "token_weights", ["method", "step", "likelihood"])
    if tw is None or "ga" not in set(tw["method"]):
        return None
    p = tw[tw["method"] == "ga"].groupby("step")["likelihood"].mean().sort_index()
    return float(1 - p.iloc[-1] / p.iloc[0]) if len(p) >= 2 and p.iloc[0] > 0 else None


def retain_small_relative(frames: Frames, **_: Any) -> list[Finding]:
    steps = _has(frames, "geffect_steps", ["method", "step", "probe", "value"])
    if steps is None:
        return []
    totals = steps.pivot_table(index="method", columns="probe", values="value", aggfunc="sum")
    if not {"forget", "retain"} <= set(totals.columns) or "ga" not in totals.index:
        return []
    ratio = (totals["retain"].abs() / totals["forget"].abs().replace(0, np.nan)).dropna()
    tested = [m for m in ("wga", "tnpo") if m in ratio.index]
    if not tested:
        return []
    small = [m for m in tested if ratio[m] < min(1.0, ratio["ga"])]
    larger = [m for m in tested if ratio[m] >= ratio["ga"]]
    verdict = "supports" if len(small) == len(tested) else ("contradicts" if larger else "inconclusive")
    text = ("Cumulative |retaining| / |unlearning| G-effect (scale-free within a method): GA "
            f"{_fmt(ratio['ga'])}, " + ", ".join(f"{m} {_fmt(ratio[m])}" for m in tested)
            + "; all methods: " + ", ".join(f"{m} {_fmt(v)}" for m, v in ratio.sort_values().items())
            + ". Criterion: supported when WGA's and TNPO's ratios are below 1 and below GA's, contradicted when "
              "either is at least GA's.")
    return [Finding("retain_relative", f"{GEFFECT}: WGA and TNPO keep the retaining G-effect small relative to "
                    "the unlearning one (GA does not).", text, verdict, {"ratio": ratio.to_dict()})]


def per_unit_update(frames: Frames, **_: Any) -> list[Finding]:
    steps = _has(frames, "geffect_steps", ["method", "step", "probe", "per_norm"])
    if steps is None:
        return []
    first = steps[steps["step"] == steps["step"].min()].pivot_table(index="method", columns="probe", values="per_norm")
    if "forget" not in first.columns or first["forget"].isna().all():
        return []
    order = first["forget"].sort_values()
    text = ("At step 1 (every method at the target's weights), G-effect per unit of update norm e/||d|| on the forget "
            "probe (more negative = more forgetting per unit step): " + ", ".join(f"{m} {_fmt(v)}" for m, v in order.items()))
    if "retain" in first.columns:
        text += "; on the retain probe: " + ", ".join(f"{m} {_fmt(first.loc[m, 'retain'])}" for m in order.index)
    return [Finding("per_unit_update", "Scale-free comparison of the objectives' first update directions "
                    "(a measurement: the raw G-effects differ by the objectives' gradient scales).", text + ".",
                    "describes", {"per_norm_step1": first.reset_index().to_dict("records")})]


# --------------------------------------------------------------------------- matched utility
def matched_point(traj: pd.DataFrame, threshold: float) -> tuple[float, float, bool]:
    """(forget ES, step, reached) where retain ES first falls to ``threshold``, linearly interpolated.

    When retain ES never falls that low, the last checkpoint's forget ES and step are returned
    with ``reached=False`` (an upper bound on the forget ES at the budget if ES keeps falling).
    """
    t = traj.sort_values("step").dropna(subset=["forget_es", "retain_es"])
    rows = list(t.itertuples(index=False))
    for a, b in zip(rows, rows[1:]):
        if a.retain_es >= threshold >= b.retain_es and a.retain_es != b.retain_es:
            w = (a.retain_es - threshold) / (a.retain_es - b.retain_es)
            return a.forget_es + w * (b.forget_es - a.forget_es), a.step + w * (b.step - a.step), True
    if rows and rows[0].retain_es <= threshold:
        return rows[0].forget_es, rows[0].step, True
    last = rows[-1] if rows else None
    return (last.forget_es, last.step, False) if last else (math.nan, math.nan, False)


def _matched(frames: Frames, budget: float, forget: str = "forget_es", retain: str = "retain_es",
             **_: Any) -> tuple[dict[str, tuple[float, float, bool]], float] | None:
    """Matched points of every method on the trajectory columns ``forget`` / ``retain`` (the benchmark's axes)."""
    traj = _has(frames, "trajectory", ["method", "step", forget, retain])
    if traj is None:
        return None
    traj = traj.drop(columns=[c for c in ("forget_es", "retain_es") if c not in (forget, retain)], errors="ignore")
    traj = traj.rename(columns={forget: "forget_es", retain: "retain_es"})
    start = traj[traj["step"] == 0]["retain_es"]
    if start.empty:
        return None
    threshold = budget * float(start.iloc[0])
    return {m: matched_point(t, threshold) for m, t in traj.groupby("method")}, threshold


def _better(a: tuple[float, float, bool], b: tuple[float, float, bool]) -> bool | None:
    """Does method a forget more than b at the budget? None when the data cannot tell."""
    (fa, _, ra), (fb, _, rb) = a, b
    if ra and rb:
        return fa < fb
    if ra and not rb:  # b's final forget ES is an upper bound of its value at the budget
        return False if fb <= fa else None
    if rb and not ra:
        return True if fa <= fb else None
    return None


def _names(kw: Mapping[str, Any]) -> tuple[str, str, str]:
    """(Forget metric capitalised, forget metric, retain metric) names of the benchmark's axes."""
    forget, retain = kw.get("forget_name", "forget ES"), kw.get("retain_name", "retain ES")
    return forget[:1].upper() + forget[1:], forget, retain


def _describe(name: str, point: tuple[float, float, bool], forget_name: str = "forget ES") -> str:
    f, step, reached = point
    return (f"{name} {f:.3f} (step {step:.1f})" if reached else f"{name} never reaches it (final {forget_name} {f:.3f})")


def matched_utility(frames: Frames, budget: float = 0.9, **kw: Any) -> list[Finding]:
    res = _matched(frames, budget, **kw)
    if res is None:
        return []
    points, threshold = res
    Fn, fn, rn = _names(kw)
    never = [m for m, p in points.items() if not p[2]]
    order = sorted(points, key=lambda m: (not points[m][2], points[m][0]))
    text = (f"{Fn} where {rn} falls to {budget:.0%} of the target's ({threshold:.3f}): "
            + "; ".join(_describe(m, points[m], fn) for m in order) + "."
            + (f" {len(never)} method(s) keep {rn} above the budget for the whole run." if never else ""))
    return [Finding("matched_utility", "Methods at matched utility (the papers compare methods at equal retained "
                    "performance, not at one learning rate).", text, "describes",
                    {"threshold": threshold, "points": {m: list(p) for m, p in points.items()}})]


def _ordering(points: dict, chain: list[str]) -> tuple[str, list]:
    pairs = [(a, b, _better(points[a], points[b])) for a, b in zip(chain, chain[1:])]
    verdicts = [v for _, _, v in pairs]
    if all(v is True for v in verdicts):
        return "supports", pairs
    if any(v is False for v in verdicts):
        return "contradicts", pairs
    return "inconclusive", pairs


def satimp_ordering(frames: Frames, budget: float = 0.9, **kw: Any) -> list[Finding]:
    res = _matched(frames, budget, **kw)
    chain = ["satimp", "simsat", "simimp"]
    if res is None or not set(chain) <= set(res[0]):
        return []
    points, threshold = res
    Fn, fn, rn = _names(kw)
    verdict, pairs = _ordering(points, chain)
    text = (f"{Fn} at {rn} = {threshold:.3f} ({budget:.0%} of the target's): "
            + "; ".join(_describe(m, points[m], fn) for m in chain) + ". "
            + " ".join(f"{a} forgets more than {b}: {'yes' if v else 'no' if v is False else 'undecided'}."
                       for a, b, v in pairs))
    return [Finding("satimp_ordering", f"{SATIMP}: at matched {rn}, SatImp forgets more than SimSat, and "
                    "SimSat more than SimImp.", text, verdict, {"points": {m: list(points[m]) for m in chain}})]


def wagle_tradeoff(frames: Frames, budget: float = 0.9, **kw: Any) -> list[Finding]:
    res = _matched(frames, budget, **kw)
    if res is None or not {"wagle_gd", "random_gd"} <= set(res[0]):
        return []
    points, threshold = res
    Fn, fn, rn = _names(kw)
    vs_random = _better(points["wagle_gd"], points["random_gd"])
    vs_dense = _better(points["wagle_gd"], points["gd"]) if "gd" in points else None
    verdict = {True: "supports", False: "contradicts", None: "inconclusive"}[vs_random]
    text = (f"{Fn} at {rn} = {threshold:.3f}: " + "; ".join(
        _describe(m, points[m], fn) for m in ("wagle_gd", "random_gd", "gd") if m in points)
        + f". WAGLE mask vs random mask of the same density: {'better' if vs_random else 'worse' if vs_random is False else 'undecided'}"
        + (f"; vs dense GD: {'better' if vs_dense else 'worse' if vs_dense is False else 'undecided'}" if "gd" in points else "")
        + ".")
    return [Finding("wagle_tradeoff", f"{WAGLE}: GD restricted to the WAGLE-selected weights trades forgetting "
                    "against utility better than GD on a random mask of the same density.", text, verdict,
                    {"points": {m: list(points[m]) for m in ("wagle_gd", "random_gd", "gd") if m in points}})]


def granularity_ablation(frames: Frames, budget: float = 0.9, **kw: Any) -> list[Finding]:
    res = _matched(frames, budget, **kw)
    names = {"token": "satimp", "instance": "satimp_instance", "group": "satimp_group", "batch": "satimp_batch"}
    if res is None or not {"satimp", "satimp_instance"} <= set(res[0]):
        return []
    points, threshold = res
    present = {g: m for g, m in names.items() if m in points}
    token_best = [_better(points["satimp"], points[m]) for g, m in present.items() if g != "token"]
    verdict = ("supports" if all(v is True for v in token_best) else
               "contradicts" if any(v is False for v in token_best) else "inconclusive")
    Fn, fn, rn = _names(kw)
    text = (f"{Fn} at {rn} = {threshold:.3f} with the SatImp weight at each granularity: "
            + "; ".join(_describe(g, points[m], fn) for g, m in present.items()) + ".")
    return [Finding("granularity", f"{SATIMP}: token-wise weights forget more at matched utility than the same "
                    "weights pooled per instance, group or batch.", text, verdict,
                    {"points": {g: list(points[m]) for g, m in present.items()}})]


# --------------------------------------------------------------------------- SatImp: weights vs likelihood
#: methods whose logged weights are a function of the logged likelihood alone (a relation would be a definition)
LIKELIHOOD_FUNCTIONS = {"wga", "simsat", "simimp", "satimp", "ga", "gd"}


def weights_not_from_likelihood(frames: Frames, **_: Any) -> list[Finding]:
    rhos, excluded = {}, sorted(LIKELIHOOD_FUNCTIONS)
    tw = _has(frames, "token_weights", ["method", "step", "likelihood", "weight"])
    if tw is not None and "tnpo" in set(tw["method"]):
        late = tw[(tw["method"] == "tnpo") & (tw["step"] > tw["step"].min())]  # p != p_ref after the first update
        rho = _spearman(late["likelihood"].to_numpy(), late["weight"].to_numpy())
        if not math.isnan(rho):
            rhos["tnpo tokens (steps > 1)"] = rho
    pg = _has(frames, "pg_effects", ["method", "step", "instance", "weight"])
    if pg is not None and tw is not None and "npo" in set(pg["method"]):
        lik = (tw[tw["method"] == "npo"].assign(lp=lambda f: np.log(f["likelihood"].clip(lower=1e-30)))
               .groupby(["step", "instance"])["lp"].sum().rename("sequence_logprob").reset_index())
        npo = pg[pg["method"] == "npo"].merge(lik, on=["step", "instance"])
        npo = npo[npo["step"] > npo["step"].min()]
        rho = _spearman(npo["sequence_logprob"].to_numpy(), npo["weight"].to_numpy())
        if not math.isnan(rho):
            rhos["npo instances (steps > 1)"] = rho
    if not rhos:
        return []
    rising = [k for k, v in rhos.items() if v > 0.3]
    falling = [k for k, v in rhos.items() if v < -0.3]
    verdict = "supports" if len(rising) == len(rhos) else ("contradicts" if falling else "inconclusive")
    text = ("Spearman ρ between the weight and the current likelihood, for weights that also depend on the "
            "reference model: " + ", ".join(f"{k} ρ = {v:+.2f}" for k, v in rhos.items())
            + f". Not tested (their weight is a function of the logged likelihood by definition): {', '.join(excluded)}.")
    return [Finding("weights_vs_likelihood", f"{SATIMP}: NPO-style weights act as saturation weights — larger on "
                    "data the model still assigns high likelihood.", text, verdict, {"spearman": rhos})]


# --------------------------------------------------------------------------- WAGLE mask location
def mask_location(frames: Frames, **_: Any) -> list[Finding]:
    md = _has(frames, "mask_density", ["mask", "group", "module", "density", "numel"])
    if md is None or "wagle" not in set(md["mask"]):
        return []
    md = md.assign(bucket=md["group"].map(layer_buckets(md["group"])), kept=md["density"] * md["numel"])
    dens = md.groupby(["mask", "bucket"])[["kept", "numel"]].sum().pipe(lambda d: d["kept"] / d["numel"]).unstack()
    by_module = md.groupby(["mask", "module"])[["kept", "numel"]].sum().pipe(lambda d: d["kept"] / d["numel"]).unstack()
    w = dens.loc["wagle"]
    if not {"shallow", "middle", "deep"} <= set(w.index):
        return []
    early = float(md[(md["mask"] == "wagle") & md["bucket"].isin(["shallow", "middle"])].pipe(
        lambda d: d["kept"].sum() / d["numel"].sum()))
    verdict = "supports" if early > w["deep"] else "contradicts"
    text = ("WAGLE mask density per bucket: " + ", ".join(f"{b} {w[b]:.0%}" for b in LAYER_BUCKETS if b in w.index)
            + (f" (random mask: {dens.loc['random'].mean():.0%} everywhere)" if "random" in dens.index else "")
            + f"; shallow+middle {early:.0%} vs deep {w['deep']:.0%}. By module type: "
            + ", ".join(f"{k} {v:.0%}" for k, v in by_module.loc["wagle"].dropna().sort_values(ascending=False).items())
            + ".")
    return [Finding("wagle_mask", f"{WAGLE}: the weights WAGLE selects concentrate in the early-to-middle layers "
                    "(a magnitude mask is near-uniform).", text, verdict,
                    {"bucket_density": dens.to_dict(), "module_density": by_module.to_dict()})]


def attribution_shift(frames: Frames, **_: Any) -> list[Finding]:
    ta = _has(frames, "token_attribution", ["example", "model", "position", "attribution"])
    if ta is None or "before" not in set(ta["model"]):
        return []
    corr = {}
    for model in sorted(set(ta["model"]) - {"before"}):
        rs = []
        for _, ex in ta.groupby("example"):
            wide = ex.pivot_table(index="position", columns="model", values="attribution")
            if {"before", model} <= set(wide.columns) and len(wide) >= 3:
                a, b = wide["before"].to_numpy(), wide[model].to_numpy()
                if np.std(a) > 0 and np.std(b) > 0:
                    rs.append(float(np.corrcoef(a, b)[0, 1]))
        if rs:
            corr[model] = float(np.mean(rs))
    if not corr:
        return []
    most, least = min(corr, key=corr.get), max(corr, key=corr.get)
    return [Finding("attribution_shift", "Which answer tokens the model relies on after unlearning (a measurement).",
                    f"Token attributions of the forget answers correlate with the target model's by r = "
                    f"{corr[least]:.2f} for {least} (least changed) down to r = {corr[most]:.2f} for {most} (most "
                    "changed), mean over examples.", "describes", {"correlation_with_before": corr})]


#: checks in report order, and whether they presume a subject that memorised the forget set
FINDINGS: list[tuple[Callable[..., list[Finding]], bool]] = [
    (ga_retain_mirrors_unlearning, True), (layers_carrying_unlearning, True), (weighting_shrinks_geffect, True),
    (retain_small_relative, True), (per_unit_update, True), (matched_utility, True), (satimp_ordering, True),
    (wagle_tradeoff, True), (granularity_ablation, True), (weights_not_from_likelihood, True), (mask_location, False), (attribution_shift, True),
]


def compute_findings(frames: Frames, *, gate=None, budget: float = 0.9, keys: Collection[str] | None = None,
                     **axes: str) -> list[Finding]:
    """All findings the data supports, in a fixed order; a failing check is logged and skipped.

    ``keys``: the finding keys that apply to the benchmark (None: all). ``axes``: the trajectory
    columns and names matched utility is read on (``forget``, ``retain``, ``forget_name``,
    ``retain_name``; default TOFU's forget / retain ES).
    """
    out: list[Finding] = []
    failed_gate = gate is not None and not gate.passed
    if failed_gate:
        out.append(Finding("gate", "The study's subject memorised the forget set (sanity gate).", gate.text(),
                           "contradicts", gate.numbers))
    for check, presumes_memorisation in FINDINGS:
        if failed_gate and presumes_memorisation:
            continue
        try:
            out.extend(f for f in check(frames, budget=budget, **axes) if keys is None or f.key in keys)
        except Exception:  # one broken check must not lose the report
            logger.exception("finding %s failed; skipped", check.__name__)
    return out
