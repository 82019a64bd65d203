"""analyses.stats: bootstrap intervals against closed forms, the two-level bootstrap, the verdict rule.

Synthetic data with known answers; every random draw has a fixed seed, so each test gives the
same result on every run, and each checks something a wrong implementation would get wrong
(a wrong quantile, a statistic averaged in the wrong order, seeds ignored, a pooled trend).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analyses.stats import (CONTRADICTS, DESCRIBES, INCONCLUSIVE, SUPPORTS, Estimate, _weighted_ranks, bootstrap_ci,
                            group_correlations, hierarchical_bootstrap, paired_difference, ratio_ci, seed_bands,
                            seed_interval, verdict, within_group_correlation)

NAN = float("nan")


# --- the result type -------------------------------------------------------------------------


def test_estimate_format_names_interval_and_n():
    assert Estimate(0.1234, 0.0512, 0.187, n=120, n_seeds=3).format() == "0.123 [0.0512, 0.187], n=40×3 seeds"
    assert Estimate(0.1234, 0.0512, 0.187, n=40).format() == "0.123 [0.0512, 0.187], n=40"
    assert Estimate(0.5, 0.1, 0.9, n=3, n_seeds=3).format() == "0.5 [0.1, 0.9], n=3 seeds"
    assert Estimate(0.5, 0.1, 0.9, n=118, n_seeds=3).format() == "0.5 [0.1, 0.9], n=118 over 3 seeds"
    assert Estimate(0.5, NAN, NAN, n=1, n_seeds=1).format() == "0.5 (no interval), n=1 seed"
    assert Estimate(0.5, 0.1, 0.9, level=0.9, n=10).format() == "0.5 [0.1, 0.9] (90%), n=10"
    with pytest.raises(ValueError, match="out of order"):
        Estimate(0.5, 0.9, 0.1)
    with pytest.raises(ValueError, match="level"):
        Estimate(0.5, 0.1, 0.9, level=95)


def test_estimate_round_trips_through_strict_json():
    for est in (Estimate(0.5, NAN, NAN, n=1, n_seeds=1, method="t over seeds"),
                Estimate(-1.0, -2.0, 0.5, level=0.9, n=40, method="percentile")):
        text = json.dumps(est.to_dict(), allow_nan=False)  # NaN would raise here
        back = Estimate.from_dict(json.loads(text))
        assert back.format() == est.format() and back.method == est.method and back.n_seeds == est.n_seeds


# --- one level -------------------------------------------------------------------------------


def test_percentile_and_bca_match_the_t_interval_of_a_mean():
    """Mean of n=200 normal values: the bootstrap interval is the t interval up to Monte-Carlo
    error (sd of a 2.5% endpoint at B=4000: ~0.06 SE) and the plug-in sd (ddof=0: 0.25%)."""
    x = np.random.default_rng(0).normal(3.0, 2.0, 200)
    se = x.std(ddof=1) / math.sqrt(x.size)
    t_low, t_high = sps.t.interval(0.95, x.size - 1, loc=x.mean(), scale=se)
    for method in ("percentile", "bca"):
        est = bootstrap_ci(x, np.mean, method=method, n_resamples=4000, rng=1)
        assert est.estimate == pytest.approx(x.mean(), rel=1e-12)
        assert abs(est.low - t_low) < 0.15 * se and abs(est.high - t_high) < 0.15 * se, (method, est, t_low, t_high)
        assert est.n == 200 and est.n_seeds is None
    # a 90% interval is narrower, and the width scales like the normal quantiles (1.645 / 1.96)
    e90, e95 = (bootstrap_ci(x, level=lv, n_resamples=4000, rng=1) for lv in (0.90, 0.95))
    assert e90.width / e95.width == pytest.approx(1.645 / 1.960, rel=0.06)


def test_percentile_interval_covers_the_mean_at_its_level():
    """200 normal data sets of n=50; 95% intervals cover the true mean 0.90-0.99 of the time (0.942 over
    1000 data sets; skewed data cover less: 0.909 for exponential values, docs/statistics.md)."""
    rng = np.random.default_rng(2)
    hits = sum(bootstrap_ci(rng.normal(1.0, 1.0, 50), n_resamples=1000, rng=i).contains(1.0) for i in range(200))
    assert 0.90 <= hits / 200 <= 0.99, hits


def test_bootstrap_is_reproducible_and_checks_its_input():
    x = np.random.default_rng(3).normal(size=30)
    assert bootstrap_ci(x, rng=7) == bootstrap_ci(x, rng=7)
    assert bootstrap_ci(x, rng=7) != bootstrap_ci(x, rng=8)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.r_[x, np.nan])
    with pytest.raises(ValueError, match="paired=True"):
        bootstrap_ci((x, x), lambda a, b, axis=-1: a.mean(axis) - b.mean(axis))
    with pytest.raises(ValueError, match="unknown bootstrap method"):
        bootstrap_ci(x, method="studentized")
    one = bootstrap_ci([1.5])
    assert one.estimate == 1.5 and not one.has_interval
    # constant data: the percentile interval is the point; BCa (undefined acceleration) falls back to it
    const = bootstrap_ci(np.ones(10), method="bca", n_resamples=200)
    assert (const.low, const.high, const.method) == (1.0, 1.0, "percentile")


# --- ratio of sums ---------------------------------------------------------------------------


def test_ratio_is_a_ratio_of_resampled_sums_with_the_delta_method_error():
    """R = sum(a) / sum(b); delta method: se(R) = sqrt(mean((a - R b)^2) / n) / mean(b)."""
    rng = np.random.default_rng(4)
    n = 400
    den = rng.gamma(2.0, 1.0, n)
    num = 0.3 * den + rng.normal(0.0, 0.4, n)
    r = num.sum() / den.sum()
    se = math.sqrt(np.mean((num - r * den) ** 2) / n) / den.mean()
    for est in (ratio_ci(num, den, n_resamples=4000, rng=5),
                hierarchical_bootstrap(num, denominator=den, n_resamples=4000, rng=5)):
        assert est.estimate == pytest.approx(r, rel=1e-12)
        assert est.width / (2 * 1.96) == pytest.approx(se, rel=0.08), (est, se)
    # not the mean of per-unit ratios: units with a small total carry little weight
    num2, den2 = np.array([1.0, 1.0, 1.0, 9.0]), np.array([0.1, 10.0, 10.0, 10.0])
    est2 = ratio_ci(num2, den2, n_resamples=200)
    assert est2.estimate == pytest.approx(12.0 / 30.1) and np.mean(num2 / den2) > 2.0


def test_ratio_keeps_the_rows_of_one_unit_together():
    """A share over layers: rows (unit, layer); numerator = the group's layers, denominator = all."""
    rng = np.random.default_rng(6)
    units, layers = 50, 4
    unit = np.repeat(np.arange(units), layers)
    value = rng.gamma(2.0, 1.0, units * layers) * np.repeat(rng.gamma(2.0, 1.0, units), layers)
    in_group = np.tile(np.arange(layers) < 1, units)
    est = ratio_ci(np.where(in_group, value, 0.0), value, units=unit, n_resamples=2000, rng=0)
    per_unit_num = np.bincount(unit, np.where(in_group, value, 0.0))
    per_unit_den = np.bincount(unit, value)
    ref = ratio_ci(per_unit_num, per_unit_den, n_resamples=2000, rng=0)  # the same units, summed by hand
    assert est.estimate == pytest.approx(value[in_group].sum() / value.sum(), rel=1e-12)
    assert (est.low, est.high, est.n) == pytest.approx((ref.low, ref.high, units), rel=1e-12)
    # the cluster bootstrap of rows with units= gives the same statistic and a similar width
    clustered = hierarchical_bootstrap(np.where(in_group, value, 0.0), units=unit, denominator=value, rng=0)
    assert clustered.estimate == pytest.approx(est.estimate, rel=1e-12)
    assert clustered.width == pytest.approx(est.width, rel=0.15)


# --- paired differences ----------------------------------------------------------------------


def _two_methods(seeds: int, rows: int, diff: float, rng: np.random.Generator) -> pd.DataFrame:
    """Methods a and b on the same rows: a large row difficulty (sd 3) shared by both, a = b + diff + noise."""
    difficulty = rng.normal(0.0, 3.0, rows)
    frames = []
    for s in range(seeds):
        b = difficulty + rng.normal(0.0, 0.2, rows)
        a = b + diff + rng.normal(0.0, 0.2, rows)
        frames += [pd.DataFrame({"seed": s, "row": np.arange(rows), "method": m, "value": v}) for m, v in (("a", a),
                                                                                                          ("b", b))]
    return pd.concat(frames, ignore_index=True)


def test_paired_difference_cancels_shared_row_difficulty():
    frame = _two_methods(1, 60, 0.3, np.random.default_rng(7))
    a = frame[frame.method == "a"].value.to_numpy()
    b = frame[frame.method == "b"].value.to_numpy()
    paired = paired_difference(frame, value="value", between="method", a="a", b="b", unit="row")
    unpaired = bootstrap_ci((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=False)
    assert paired.estimate == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert paired.low > 0.2 and paired.high < 0.4 and paired.n == 60  # the 0.3 difference, resolved
    assert unpaired.contains(0.0)  # lost in the rows' difficulty when the pairing is ignored
    assert verdict(paired, 0.0, "greater") == SUPPORTS and verdict(unpaired, 0.0, "greater") == INCONCLUSIVE


def test_paired_difference_over_seeds_and_its_checks():
    frame = _two_methods(4, 40, 0.3, np.random.default_rng(8))
    est = paired_difference(frame, value="value", between="method", a="a", b="b", unit="row", seed="seed",
                            scheme="crossed")
    assert est.n == 160 and est.n_seeds == 4 and est.low > 0.2 and est.high < 0.4
    # a pair with one method missing is left out, not compared with nothing
    short = frame.drop(frame[(frame.method == "b") & (frame.row == 0)].index)
    assert paired_difference(short, value="value", between="method", a="a", b="b", unit="row", seed="seed").n == 156
    with pytest.raises(ValueError, match="duplicate"):
        paired_difference(pd.concat([frame, frame.head(1)]), value="value", between="method", a="a", b="b",
                          unit="row", seed="seed")
    with pytest.raises(ValueError, match="no rows with method == 'c'"):
        paired_difference(frame, value="value", between="method", a="a", b="c", unit="row", seed="seed")


# --- two levels ------------------------------------------------------------------------------


def _layout(seeds: int, units: int, seed_sd: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    seed = np.repeat(np.arange(seeds), units)
    unit = np.tile(np.arange(units), seeds)
    noise = rng.normal(0.0, 1.0, seeds * units)
    offsets = np.repeat(rng.normal(0.0, 1.0, seeds), units)
    return seed, unit, noise, offsets


@pytest.mark.parametrize("scheme", ["nested", "crossed"])
@pytest.mark.parametrize("seed_t", [False, True])
def test_hierarchical_interval_widens_with_between_seed_variance(scheme, seed_t):
    seed, unit, noise, offsets = _layout(5, 40, 1.0, np.random.default_rng(9))
    widths = [hierarchical_bootstrap(noise + k * offsets, seed, unit, scheme=scheme, seed_t=seed_t, rng=0).width
              for k in (0.0, 0.5, 2.0)]
    assert widths[0] < widths[1] < widths[2] and widths[2] > 3 * widths[0], widths
    # ignoring the seeds (every (seed, unit) an independent unit) misses that spread
    pooled = hierarchical_bootstrap(noise + 2.0 * offsets, rng=0)
    assert pooled.width < widths[2] / 3 and pooled.n_seeds is None


def test_nested_bootstrap_variance_matches_its_closed_form():
    """Balanced nested resampling (S seeds, K units): Var* of the grand mean = (B0 + W0 / K) / S with
    B0 = the plug-in variance of the seed means and W0 = the mean plug-in variance within seeds."""
    S, K = 30, 20
    seed, unit, noise, offsets = _layout(S, K, 1.0, np.random.default_rng(10))
    x = noise + 0.5 * offsets
    grid = x.reshape(S, K)  # (S, K)
    var = (grid.mean(1).var() + grid.var(1).mean() / K) / S
    est = hierarchical_bootstrap(x, seed, unit, scheme="nested", seed_t=False, n_resamples=4000, rng=1)
    assert est.width / (2 * 1.96) == pytest.approx(math.sqrt(var), rel=0.06)
    # crossed: Var* = <x, A x B> / (S K)^2 - mean^2 with A = (1 - 1/S) J + I, B = (1 - 1/K) J + I
    A = (1 - 1 / S) * np.ones((S, S)) + np.eye(S)
    B = (1 - 1 / K) * np.ones((K, K)) + np.eye(K)
    var_c = float(np.sum(grid * (A @ grid @ B))) / (S * K) ** 2 - grid.mean() ** 2
    est_c = hierarchical_bootstrap(x, seed, unit, scheme="crossed", seed_t=False, n_resamples=4000, rng=1)
    assert est_c.width / (2 * 1.96) == pytest.approx(math.sqrt(var_c), rel=0.06)


def test_seed_t_hull_and_one_seed():
    seed, unit, noise, offsets = _layout(3, 40, 1.0, np.random.default_rng(11))
    x = noise + 2.0 * offsets
    boot = hierarchical_bootstrap(x, seed, unit, seed_t=False)
    hull = hierarchical_bootstrap(x, seed, unit, seed_t=True)
    t = seed_interval(x.reshape(3, 40).mean(1))
    assert hull.low == pytest.approx(min(boot.low, t.low)) and hull.high == pytest.approx(max(boot.high, t.high))
    assert hull.width > boot.width  # 3 seeds: the t interval (t_2 = 4.30) is the wider one
    # one seed: no interval by default (seed noise is unseen), an interval over units on request
    one = hierarchical_bootstrap(x[:40], seed[:40], unit[:40])
    assert not one.has_interval and one.n_seeds == 1 and verdict(one, -100.0, "greater") == INCONCLUSIVE
    assert hierarchical_bootstrap(x[:40], seed[:40], unit[:40], seed_t=False).has_interval
    # the default scheme: crossed when units are named (the same rows in every seed), else nested
    assert hierarchical_bootstrap(x, seed, unit).method.startswith("crossed")
    assert hierarchical_bootstrap(x, seed).method.startswith("nested")
    with pytest.raises(ValueError, match="needs units"):
        hierarchical_bootstrap(x, seed, scheme="crossed")
    with pytest.raises(ValueError, match="unknown scheme"):
        hierarchical_bootstrap(x, seed, unit, scheme="pigeonhole")


# --- seeds -----------------------------------------------------------------------------------


def test_seed_interval_is_the_t_interval_and_one_seed_has_none():
    v = np.array([0.2, 0.5, 0.3, 0.6])
    est = seed_interval(v)
    low, high = sps.t.interval(0.95, 3, loc=v.mean(), scale=v.std(ddof=1) / 2.0)
    assert (est.estimate, est.low, est.high, est.n_seeds) == pytest.approx((v.mean(), low, high, 4), rel=1e-12)
    single = seed_interval([0.4])
    assert single.estimate == 0.4 and math.isnan(single.low) and math.isnan(single.high)
    assert verdict(single, 0.0, "greater") == INCONCLUSIVE


def test_seed_bands_per_method_and_step():
    frame = pd.DataFrame({"method": "ga", "seed": [0, 0, 1, 1, 2, 2, 0, 0, 1],
                          "step": [1, 1, 1, 1, 1, 1, 2, 2, 2],
                          "value": [1.0, 3.0, 4.0, 4.0, 6.0, np.nan, 1.0, 1.0, np.nan]})
    bands = seed_bands(frame)
    step1 = bands[bands.step == 1].iloc[0]
    low, high = sps.t.interval(0.95, 2, loc=4.0, scale=2.0 / math.sqrt(3))  # seed means 2, 4, 6
    assert (step1["mean"], step1["low"], step1["high"], step1["n_seeds"]) == pytest.approx((4.0, low, high, 3))
    step2 = bands[bands.step == 2].iloc[0]  # seed 1 has no value at step 2: one seed, no band
    assert step2["mean"] == 1.0 and step2["n_seeds"] == 1 and math.isnan(step2["low"]) and math.isnan(step2["high"])
    with pytest.raises(ValueError, match="lacks column"):
        seed_bands(frame.drop(columns="seed"))


# --- the verdict rule ------------------------------------------------------------------------


def test_verdict_rule():
    straddle = Estimate(0.1, -0.05, 0.25, n=40)
    above, below = Estimate(0.3, 0.1, 0.5, n=40), Estimate(-0.3, -0.5, -0.1, n=40)
    assert verdict(straddle, 0.0, "greater") == INCONCLUSIVE and verdict(straddle, 0.0, "less") == INCONCLUSIVE
    assert verdict(above, 0.0, "greater") == SUPPORTS and verdict(above, 0.0, "<") == CONTRADICTS
    assert verdict(below, 0.0, ">") == CONTRADICTS and verdict(below, 0.0, "less") == SUPPORTS
    assert verdict(Estimate(0.3, 0.0, 0.5), 0.0, "greater") == INCONCLUSIVE  # touching the boundary is not clearing it
    assert verdict(above, 0.6, "greater") == CONTRADICTS  # any boundary, not only zero
    assert verdict(Estimate(0.3, NAN, NAN), 0.0, "greater") == INCONCLUSIVE
    assert verdict(None, 0.0, "greater") == INCONCLUSIVE
    assert verdict(above) == DESCRIBES
    with pytest.raises(ValueError, match="both"):
        verdict(above, 0.0)
    with pytest.raises(ValueError, match="unknown direction"):
        verdict(above, 0.0, "two-sided")


# --- correlation within groups ---------------------------------------------------------------


def test_weighted_ranks_equal_scipy_ranks_of_the_materialised_resample():
    rng = np.random.default_rng(12)
    values = np.round(rng.normal(size=25), 1)  # ties in the data as well as from resampling
    counts = rng.multinomial(25, np.full(25, 1 / 25), size=20)  # (20, 25)
    ranks = _weighted_ranks(values, counts.astype(np.float64))
    for b in range(20):
        sample = np.repeat(values, counts[b])
        ref = sps.rankdata(sample)
        got = np.repeat(ranks[b], counts[b])
        np.testing.assert_allclose(got, ref, rtol=1e-12)


def _trending(groups: int, per_group: int, within: float, rng: np.random.Generator) -> pd.DataFrame:
    """x and y both rise with the group (a shared trend); within a group y = within * x + noise."""
    step = np.repeat(np.arange(groups), per_group)
    x = 3.0 * step + rng.normal(size=step.size)
    y = 3.0 * step + within * (x - 3.0 * step) + rng.normal(size=step.size)
    return pd.DataFrame({"step": step, "unit": np.tile(np.arange(per_group), groups), "x": x, "y": y})


def test_within_group_correlation_removes_a_shared_trend():
    frame = _trending(5, 40, 0.0, np.random.default_rng(13))
    pooled = sps.spearmanr(frame.x, frame.y)[0]
    per_group = group_correlations(frame, "x", "y", "step")
    for key, g in frame.groupby("step"):
        assert per_group[key] == pytest.approx(sps.spearmanr(g.x, g.y)[0], rel=1e-12, abs=1e-12)
    assert pooled > 0.8
    for unit in (None, "unit"):
        est = within_group_correlation(frame, "x", "y", "step", unit=unit)
        assert abs(est.estimate) < 0.15 and est.contains(0.0), est
        assert est.estimate == pytest.approx(per_group.mean(), rel=1e-12) and est.n == (200 if unit is None else 40)
        assert verdict(est, 0.0, "greater") == INCONCLUSIVE
    # row labels play no part (a frame glued from parts repeats them); a unit twice in a group is an error
    glued = pd.concat([g for _, g in frame.groupby("step")])
    glued.index = np.arange(len(glued)) % 40
    assert within_group_correlation(glued, "x", "y", "step", unit="unit") == \
        within_group_correlation(frame, "x", "y", "step", unit="unit")
    with pytest.raises(ValueError, match="each unit once per group"):
        within_group_correlation(pd.concat([frame, frame.head(1)]), "x", "y", "step", unit="unit")
    # a real within-group relation is found (Pearson too)
    related = _trending(5, 40, 1.0, np.random.default_rng(14))
    for method in ("spearman", "pearson"):
        est = within_group_correlation(related, "x", "y", ["step"], method=method)
        assert est.low > 0.4, est
        assert verdict(est, 0.0, "greater") == SUPPORTS


def test_within_group_correlation_over_seeds_sees_seed_to_seed_spread():
    """Three seeds whose within-step relation differs (slopes 1.5, 0.3, -0.6): resampling seeds (and the t hull)
    widens the interval that units alone make narrow; one seed gives no interval."""
    rng = np.random.default_rng(15)
    frame = pd.concat([_trending(4, 40, slope, rng).assign(seed=s) for s, slope in enumerate((1.5, 0.3, -0.6))],
                      ignore_index=True)
    per_seed = [group_correlations(g, "x", "y", "step").mean() for _, g in frame.groupby("seed")]
    units_only = within_group_correlation(frame, "x", "y", ["seed", "step"], unit="unit")
    seeded = within_group_correlation(frame, "x", "y", "step", unit="unit", seed="seed")
    boot_only = within_group_correlation(frame, "x", "y", "step", unit="unit", seed="seed", seed_t=False)
    assert seeded.estimate == pytest.approx(np.mean(per_seed), rel=1e-12) and seeded.n_seeds == 3
    assert units_only.n_seeds is None and units_only.estimate == pytest.approx(seeded.estimate, rel=1e-12)
    assert units_only.width < boot_only.width / 3 < seeded.width / 3 and -1.0 <= seeded.low < seeded.high <= 1.0
    assert (units_only.n, seeded.n, seeded.format().endswith("n=40×3 seeds")) == (40, 120, True)  # units resampled
    t = seed_interval(per_seed)
    assert seeded.low == max(min(t.low, boot_only.low), -1.0) and seeded.high == min(max(t.high, boot_only.high), 1.0)
    assert verdict(units_only, 0.0, "greater") == SUPPORTS and verdict(seeded, 0.0, "greater") == INCONCLUSIVE
    one = within_group_correlation(frame[frame.seed == 0], "x", "y", "step", unit="unit", seed="seed")
    assert not one.has_interval and one.n_seeds == 1
