"""Uncertainty for the study's findings: bootstrap intervals, seed bands and the verdict rule.

A finding tests a quantity against a claim's boundary. This module gives that quantity an
interval and turns the interval into a verdict; it works on plain arrays and tidy frames
(numpy / scipy / pandas only) so that any study can use it::

    from analyses.stats import hierarchical_bootstrap, verdict
    est = hierarchical_bootstrap(frame["value"], seeds=frame["seed"], units=frame["row"])
    print(est.format(), verdict(est, boundary=0.0, direction="greater"))
    # 0.123 [0.0512, 0.187], n=40×3 seeds  supports

The layout of the study: a value per (seed, unit), where a *seed* is one unlearning run and a
*unit* an evaluation row or a probe instance. Resampling schemes:

- :func:`bootstrap_ci`: one level (units), percentile / BCa / basic intervals through
  ``scipy.stats.bootstrap`` (Efron & Tibshirani 1993, ch. 13-14), for one sample or several
  paired (resampled together) or independent samples.
- :func:`hierarchical_bootstrap`: two levels. Each replicate draws the seeds with replacement,
  then units: ``scheme="crossed"`` (the default when units are named) draws one set of units
  shared by all drawn seeds (the pigeonhole bootstrap, Owen 2007): the same evaluation rows are
  scored in every seed, and a hard row is hard in each of them; ``scheme="nested"`` draws
  units with replacement *within each drawn seed* (Davison & Hinkley 1997, sec. 3.8;
  Saravanan et al. 2020), for units with nothing in common between seeds. By default the
  interval is widened to the Student-t interval over per-seed values when that is wider
  (``seed_t``): a bootstrap over 3-5 seeds alone covers far below its level. Coverage of each
  scheme on synthetic layouts: docs/statistics.md. ``scipy.stats.bootstrap`` resamples one
  level only, so this one is written here (multinomial counts, vectorised over replicates);
  percentile intervals only (BCa's acceleration has no agreed two-level jackknife).
- :func:`ratio_ci`: a ratio of sums (the share of a G-effect in a layer group = group sum /
  total) resampled as the ratio of the resampled sums, never the mean of per-unit ratios.
- :func:`paired_difference`: method A minus method B on the same (seed, unit) pairs.
- :func:`within_group_correlation`: Spearman / Pearson correlation within each group (a step)
  averaged over groups, resampling units within groups: a trend that both variables share
  across groups does not enter it, as it does a pooled correlation.
- :func:`seed_interval` / :func:`seed_bands`: mean and Student-t interval across seeds (error
  bands on trajectories). One seed gives no interval: NaN bounds.

:func:`verdict` is the rule every finding uses: *supports* only when the whole interval lies on
the claim's side of the boundary, *contradicts* only when it lies wholly on the other side,
otherwise (and always when the interval is missing) *inconclusive*; a measurement without a
claim *describes*. Intervals are two-sided at ``level`` (0.95 by default).

References: B. Efron and R. Tibshirani, *An Introduction to the Bootstrap* (1993);
A. C. Davison and D. V. Hinkley, *Bootstrap Methods and their Application* (1997);
A. B. Owen, "The pigeonhole bootstrap", *Ann. Appl. Stat.* 1(2), 2007;
V. Saravanan, G. J. Berman and S. J. Sober, "Application of the hierarchical bootstrap to
multi-level data in neuroscience", *Neurons, Behavior, Data analysis and Theory* 3(5), 2020;
``scipy.stats.bootstrap``.
"""
from __future__ import annotations

import inspect
import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

logger = logging.getLogger(__name__)

__all__ = ["CONTRADICTS", "DESCRIBES", "INCONCLUSIVE", "LEVEL", "N_RESAMPLES", "SUPPORTS", "VERDICTS", "Estimate",
           "Interval", "bootstrap_ci", "group_correlations", "hierarchical_bootstrap", "paired_difference", "ratio_ci",
           "seed_bands", "seed_interval", "verdict", "within_group_correlation"]

#: default two-sided confidence level
LEVEL = 0.95
#: default number of bootstrap replicates (Monte-Carlo error of a 95% percentile endpoint: docs/statistics.md)
N_RESAMPLES = 2000
SUPPORTS, CONTRADICTS, INCONCLUSIVE, DESCRIBES = "supports", "contradicts", "inconclusive", "describes"
VERDICTS = (SUPPORTS, CONTRADICTS, INCONCLUSIVE, DESCRIBES)
_DIRECTIONS = {"greater": "greater", ">": "greater", "less": "less", "<": "less"}
_SCIPY_METHODS = {"percentile": "percentile", "bca": "BCa", "basic": "basic"}
#: ``scipy.stats.bootstrap`` takes ``rng`` from scipy 1.15, ``random_state`` before
_RNG_KW = "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"
_CHUNK = 1 << 22  # replicates x cells (or units) drawn at once: bounds memory

RngLike = int | np.random.Generator | None


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval.

    ``n`` is the number of observations the interval resamples: the sample size for one level,
    the number of (seed, unit) cells for two levels, the number of seeds for a t-interval across
    seeds. ``n_seeds`` is the number of seeds (None when seeds play no part). ``low`` / ``high``
    are NaN when the data give no interval (fewer than two seeds or units); :func:`verdict` then
    says *inconclusive*.
    """

    estimate: float
    low: float
    high: float
    level: float = LEVEL
    n: int = 0
    method: str = ""
    n_seeds: int | None = None

    def __post_init__(self) -> None:
        for name in ("estimate", "low", "high", "level"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "n", int(self.n))
        if self.n_seeds is not None:
            object.__setattr__(self, "n_seeds", int(self.n_seeds))
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {self.level}: pass e.g. level=0.95 for a 95% interval")
        if self.has_interval and self.low > self.high:
            raise ValueError(f"interval bounds out of order: low={self.low} > high={self.high}")

    @property
    def has_interval(self) -> bool:
        """True when both bounds are finite."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        """``low <= value <= high`` (False without an interval)."""
        return self.has_interval and self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; NaN / infinite floats become ``None`` (strict JSON has no NaN)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Estimate":
        """Inverse of :meth:`to_dict` (``None`` floats back to NaN)."""
        nan = float("nan")
        return cls(estimate=nan if data.get("estimate") is None else data["estimate"],
                   low=nan if data.get("low") is None else data["low"],
                   high=nan if data.get("high") is None else data["high"],
                   level=data.get("level", LEVEL), n=data.get("n", 0), method=data.get("method", ""),
                   n_seeds=data.get("n_seeds"))

    def format(self, digits: int = 3) -> str:
        """Compact table form: ``0.123 [0.0512, 0.187], n=40×3 seeds`` (``(90%)`` added when the
        level is not 95%; ``(no interval)`` for NaN bounds)."""
        def g(x: float) -> str:
            return f"{x:.{digits}g}"

        ci = f"[{g(self.low)}, {g(self.high)}]" if self.has_interval else "(no interval)"
        if not math.isclose(self.level, LEVEL):
            ci += f" ({self.level:.0%})"
        return f"{g(self.estimate)} {ci}, n={self._n_text()}"

    def _n_text(self) -> str:
        if self.n_seeds is None:
            return str(self.n)
        seeds = f"{self.n_seeds} seed{'' if self.n_seeds == 1 else 's'}"
        if self.n == self.n_seeds:
            return seeds
        if self.n_seeds and self.n % self.n_seeds == 0:
            return f"{self.n // self.n_seeds}×{seeds}"
        return f"{self.n} over {seeds}"

    __str__ = format


#: the same type under the name the tables use
Interval = Estimate


# ---------------------------------------------------------------------------------------------
# input checks


def _level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}: pass e.g. level=0.95 for a 95% interval")
    return float(level)


def _resamples(n_resamples: int) -> int:
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples} (2000 gives 95% endpoints to about 1% of the width)")
    return int(n_resamples)


def _values(values: Any, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per observation), got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"{name} has {bad.size} NaN / infinite value(s) (first at position {bad[0]}): drop those "
                         "observations or fill them before computing an interval")
    return x


def _labels(labels: Any, n: int, name: str) -> np.ndarray:
    codes, _ = pd.factorize(pd.Series(np.asarray(labels, dtype=object)), use_na_sentinel=True)
    if len(codes) != n:
        raise ValueError(f"{name} has {len(codes)} labels for {n} values: give one label per observation")
    if (codes < 0).any():
        raise ValueError(f"{name} has missing labels: every observation needs its {name[:-1] or name}")
    return codes


def _percentile(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite replicates (NaN when fewer than two are finite)."""
    finite = replicates[np.isfinite(replicates)]
    dropped = replicates.size - finite.size
    if dropped:
        logger.warning("%d of %d bootstrap replicates were not finite (a resample with a zero denominator or a "
                       "constant variable) and were left out of the interval", dropped, replicates.size)
    if finite.size < 2:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# one level: scipy.stats.bootstrap


def bootstrap_ci(data: Any, statistic: Callable[..., Any] = np.mean, *, paired: bool | None = None,
                 method: str = "percentile", level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                 rng: RngLike = 0) -> Estimate:
    """Bootstrap interval of ``statistic`` over units (one level), by ``scipy.stats.bootstrap``.

    Args:
        data: one sample (a 1-D array-like), or a **tuple** of samples.
        statistic: ``statistic(*samples)`` -> float. When it takes an ``axis`` keyword it is
            called vectorised (``axis=-1``), as scipy does (``np.mean``, ``np.median`` do).
        paired: required with several samples: True resamples them together (the same units,
            e.g. two methods scored on the same rows; equal lengths), False independently.
        method: ``"percentile"``, ``"bca"`` (bias-corrected and accelerated; Efron & Tibshirani
            1993, ch. 14) or ``"basic"``. BCa falls back to percentile, with a warning, when
            its acceleration is undefined (constant data).
        level: two-sided confidence level.
        n_resamples: bootstrap replicates.
        rng: seed or ``numpy.random.Generator`` (the same seed gives the same interval).

    Returns:
        :class:`Estimate` with ``n`` = the sample size (paired: number of pairs; independent:
        all observations) and ``n_seeds=None``. Fewer than two units: NaN bounds.
    """
    level, n_resamples = _level(level), _resamples(n_resamples)
    key = method.lower()
    if key not in _SCIPY_METHODS:
        raise ValueError(f"unknown bootstrap method {method!r}: use one of {sorted(_SCIPY_METHODS)}")
    samples = tuple(_values(s, f"sample {i}") for i, s in enumerate(data)) if isinstance(data, tuple) else (
        _values(data, "data"),)
    if len(samples) > 1 and paired is None:
        raise ValueError(f"bootstrap_ci got {len(samples)} samples: say paired=True (resample them together: the same "
                         "units) or paired=False (independent samples)")
    paired = bool(paired) and len(samples) > 1
    if paired and len({len(s) for s in samples}) > 1:
        raise ValueError(f"paired samples must have equal lengths, got {[len(s) for s in samples]}")
    n = len(samples[0]) if paired or len(samples) == 1 else sum(len(s) for s in samples)
    vectorized = "axis" in _parameters(statistic)
    estimate = float(statistic(*samples, axis=-1) if vectorized else statistic(*samples))
    label = _SCIPY_METHODS[key]
    if min(len(s) for s in samples) < 2:
        return Estimate(estimate, float("nan"), float("nan"), level, n, label)
    kwargs = {_RNG_KW: np.random.default_rng(rng)}

    def run(scipy_method: str) -> tuple[float, float]:
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", sps.DegenerateDataWarning)
            res = sps.bootstrap(samples, statistic, n_resamples=n_resamples, vectorized=vectorized, paired=paired,
                                confidence_level=level, method=scipy_method, **kwargs)
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    low, high = run(label)
    if label == "BCa" and not (math.isfinite(low) and math.isfinite(high)):
        logger.warning("BCa interval undefined (constant or degenerate data); using the percentile interval")
        kwargs = {_RNG_KW: np.random.default_rng(rng)}
        label = "percentile"
        low, high = run(label)
    return Estimate(estimate, low, high, level, n, label)


def _parameters(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):  # some builtins / ufuncs have no signature
        return {}


# ---------------------------------------------------------------------------------------------
# two levels: seeds, then units


def _cells(seeds: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (seed, unit) pairs: (cell index per observation, seed code per cell, unit code per cell)."""
    cell, pairs = pd.factorize(pd.MultiIndex.from_arrays([seeds, units]))
    pairs = np.asarray(pairs.to_list(), dtype=np.int64).reshape(-1, 2)  # (n_cells, 2)
    return cell, pairs[:, 0], pairs[:, 1]


def _uniform_counts(gen: np.random.Generator, draws: np.ndarray, k: int) -> np.ndarray:
    """Multinomial(draws[b], uniform over k) counts for each row b: (len(draws), k).

    Draws the indices and counts them (one ``bincount``): much faster than
    ``Generator.multinomial``, which draws k binomials per row.
    """
    rows = np.repeat(np.arange(draws.size), draws)  # (sum(draws),) replicate of each draw
    picks = gen.integers(0, k, size=rows.size)  # (sum(draws),)
    return np.bincount(rows * k + picks, minlength=draws.size * k).reshape(draws.size, k)  # (size, k)


def _resampled_sums(cell_seed: np.ndarray, cell_unit: np.ndarray, cell_values: np.ndarray, scheme: str, size: int,
                    gen: np.random.Generator) -> np.ndarray:
    """Sums of per-cell values over ``size`` two-level resamples: (size, V) for cell_values (n_cells, V).

    Seeds are drawn with replacement (S draws among S seeds). ``nested``: each drawn copy of
    seed s draws K_s of its K_s units with replacement; the m copies of s together draw a
    Multinomial(m K_s, 1/K_s) (a sum of m multinomials with the same probabilities), so a
    resample's sum is counts_s @ values_s summed over seeds. ``crossed``: one Multinomial(U, 1/U)
    draw over all U units, shared by every seed; a cell (s, u) counts (copies of s) x (copies of
    u), so the sum is M X C^T per replicate with X the (S, U) table of cell values.
    """
    n_seeds = int(cell_seed.max()) + 1
    seed_counts = _uniform_counts(gen, np.full(size, n_seeds), n_seeds).astype(np.float64)  # (size, S)
    if scheme == "nested":
        out = np.zeros((size, cell_values.shape[1]))
        for s in range(n_seeds):
            cols = np.flatnonzero(cell_seed == s)
            counts = _uniform_counts(gen, seed_counts[:, s].astype(np.int64) * cols.size, cols.size)  # (size, K_s)
            out += counts @ cell_values[cols]  # (size, V)
        return out
    n_units = int(cell_unit.max()) + 1
    unit_counts = _uniform_counts(gen, np.full(size, n_units), n_units).astype(np.float64)  # (size, U)
    table = np.zeros((n_seeds, n_units, cell_values.shape[1]))  # (S, U, V); absent cells stay 0
    table[cell_seed, cell_unit] = cell_values
    return np.einsum("bs,suv,bu->bv", seed_counts, table, unit_counts, optimize=True)  # (size, V)


def hierarchical_bootstrap(values: Any, seeds: Any = None, units: Any = None, *, denominator: Any = None,
                           scheme: str = "auto", seed_t: bool = True, level: float = LEVEL,
                           n_resamples: int = N_RESAMPLES, rng: RngLike = 0) -> Estimate:
    """Two-level (seeds, then units) percentile bootstrap of a mean or a ratio of sums.

    The statistic is the mean of ``values`` over all observations (every (seed, unit) cell
    weighted by its rows), or with ``denominator`` the ratio ``sum(values) / sum(denominator)``.
    Each replicate recomputes it on resampled seeds and units (see ``scheme``); observations of
    one (seed, unit) cell always move together, so a unit may hold several rows (its layers, its
    tokens).

    Args:
        values: one value per observation.
        seeds: seed label per observation; ``None``: one level (units only, ``n_seeds=None``).
        units: unit label per observation (evaluation row, probe instance); ``None``: every
            observation is its own unit.
        denominator: per-observation denominator for a ratio of sums.
        scheme: ``"crossed"``: one draw of units shared by all seeds (Owen 2007), for the same
            rows scored in every seed (needs ``units``; slightly conservative when units have
            nothing in common across seeds); ``"nested"``: units drawn within each drawn seed
            (Saravanan et al. 2020), which undercovers when a unit's effect is shared across
            seeds (0.86 for a nominal 0.95 in docs/statistics.md); ``"auto"``: crossed when
            ``units`` are given, else nested (every observation its own unit).
        seed_t: return the hull of the bootstrap interval and the Student-t interval over the
            per-seed statistics (:func:`seed_interval`). A percentile bootstrap over 3-5 seeds
            covers well below its level when seeds differ (0.76-0.80 for a nominal 0.95 at 3 seeds in
            docs/statistics.md); the t interval knows how little a few seeds say, the bootstrap
            sees the units; the hull covers when either does. One seed then gives no interval
            (NaN bounds): seed-to-seed noise cannot be seen. ``False``: the bootstrap alone (with
            one seed, an interval over units only). Ignored without ``seeds``.
        level, n_resamples, rng: as in :func:`bootstrap_ci`.

    Returns:
        :class:`Estimate` with ``n`` = the number of (seed, unit) cells and ``n_seeds``.
    """
    level, n_resamples = _level(level), _resamples(n_resamples)
    if scheme not in ("auto", "nested", "crossed"):
        raise ValueError(f"unknown scheme {scheme!r}: use 'crossed' (the same units in every seed), 'nested' (units "
                         "differ between seeds) or 'auto' (crossed when units are given)")
    if scheme == "auto":
        scheme = "nested" if units is None else "crossed"
    x = _values(values, "values")
    den = np.ones_like(x) if denominator is None else _values(denominator, "denominator")
    if den.size != x.size:
        raise ValueError(f"denominator has {den.size} values for {x.size} values: give one per observation")
    if x.size == 0:
        raise ValueError("no observations to bootstrap")
    if scheme == "crossed" and units is None:
        raise ValueError("scheme='crossed' shares unit draws across seeds, so it needs units= (the row / instance id)")
    seed_codes = np.zeros(x.size, dtype=np.int64) if seeds is None else _labels(seeds, x.size, "seeds")
    unit_codes = np.arange(x.size) if units is None else _labels(units, x.size, "units")
    cell, cell_seed, cell_unit = _cells(seed_codes, unit_codes)
    num_c = np.bincount(cell, weights=x)  # (n_cells,)
    den_c = np.bincount(cell, weights=den)  # (n_cells,)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = float(num_c.sum() / den_c.sum())
    n_seeds = None if seeds is None else int(cell_seed.max()) + 1
    name = "ratio" if denominator is not None else "mean"
    label = f"{scheme} bootstrap ({name}, percentile)" if seeds is not None else f"cluster bootstrap ({name}, percentile)"
    nan = float("nan")
    if np.bincount(cell_seed).max() < 2 and (n_seeds or 1) < 2:
        return Estimate(estimate, nan, nan, level, num_c.size, label, n_seeds)
    t_interval = None
    if seeds is not None and seed_t:
        with np.errstate(invalid="ignore", divide="ignore"):
            per_seed = np.bincount(cell_seed, weights=num_c) / np.bincount(cell_seed, weights=den_c)  # (S,)
        label += " hull with t over seeds"
        if n_seeds < 2 or not np.isfinite(per_seed).all():
            return Estimate(estimate, nan, nan, level, num_c.size, label + " (no interval: "
                            + ("one seed" if n_seeds < 2 else "a seed's statistic is undefined") + ")", n_seeds)
        t_interval = seed_interval(per_seed, level=level)
    gen = np.random.default_rng(rng)
    cell_values = np.stack([num_c, den_c], axis=1)  # (n_cells, 2)
    chunk = max(1, _CHUNK // num_c.size)
    reps = []
    for start in range(0, n_resamples, chunk):
        sums = _resampled_sums(cell_seed, cell_unit, cell_values, scheme, min(chunk, n_resamples - start), gen)
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append(sums[:, 0] / sums[:, 1])  # (b,)
    low, high = _percentile(np.concatenate(reps), level)
    if t_interval is not None:
        low, high = min(low, t_interval.low), max(high, t_interval.high)  # NaN bootstrap bounds stay NaN
    return Estimate(estimate, low, high, level, num_c.size, label, n_seeds)


def ratio_ci(numerator: Any, denominator: Any, *, seeds: Any = None, units: Any = None, scheme: str = "auto",
             seed_t: bool = True, method: str = "percentile", level: float = LEVEL, n_resamples: int = N_RESAMPLES,
             rng: RngLike = 0) -> Estimate:
    """Interval of ``sum(numerator) / sum(denominator)``, resampled as a ratio of resampled sums.

    E.g. the share of a G-effect carried by one layer group: per unit, ``numerator`` = the
    group's G-effect and ``denominator`` = the total. The mean of per-unit shares is a different
    (and noisier) quantity, and is never what this returns. Without ``seeds`` the units are
    resampled by ``scipy.stats.bootstrap`` (``method`` percentile / bca / basic; rows of one
    unit are summed first); with ``seeds`` by :func:`hierarchical_bootstrap` (percentile;
    ``scheme`` and ``seed_t`` as there).
    A signed total near zero makes any share unstable; the interval then says so by its width.
    """
    num = _values(numerator, "numerator")
    den = _values(denominator, "denominator")
    if num.size != den.size:
        raise ValueError(f"numerator has {num.size} values, denominator {den.size}: give one pair per observation")
    if seeds is not None:
        if method.lower() != "percentile":
            raise ValueError(f"method={method!r} is not available with seeds (two-level bootstrap): use 'percentile'")
        return hierarchical_bootstrap(num, seeds, units, denominator=den, scheme=scheme, seed_t=seed_t, level=level,
                                      n_resamples=n_resamples, rng=rng)
    if units is not None:
        codes = _labels(units, num.size, "units")
        num, den = np.bincount(codes, weights=num), np.bincount(codes, weights=den)  # (n_units,)
    est = bootstrap_ci((num, den), _ratio_of_sums, paired=True, method=method, level=level,
                       n_resamples=n_resamples, rng=rng)
    return Estimate(est.estimate, est.low, est.high, est.level, est.n, f"{est.method} (ratio of sums)")


def _ratio_of_sums(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(num, axis=axis) / np.sum(den, axis=axis)


def paired_difference(frame: pd.DataFrame, *, value: str, between: str, a: Hashable, b: Hashable, unit: str,
                      seed: str | None = None, scheme: str = "auto", seed_t: bool = True, method: str = "percentile",
                      level: float = LEVEL, n_resamples: int = N_RESAMPLES, rng: RngLike = 0) -> Estimate:
    """Interval of mean(A − B) over the (seed, unit) pairs both A and B were scored on.

    ``frame`` is tidy: one row per (``seed``, ``unit``, ``between``) with its ``value``; ``a`` and
    ``b`` are two values of column ``between`` (e.g. two methods). Differences are taken within
    each pair first (methods evaluated on the same rows share their rows' difficulty, which the
    pairing cancels), then bootstrapped: over units by :func:`bootstrap_ci` (``method``) when
    ``seed`` is None, else two-level by :func:`hierarchical_bootstrap` (``scheme``, ``seed_t`` as
    there). Pairs that miss A or B
    are left out (logged); none left is an error.
    """
    keys = [c for c in (seed, unit) if c is not None]
    missing = [c for c in (*keys, value, between) if c not in frame.columns]
    if missing:
        raise ValueError(f"paired_difference: frame lacks column(s) {missing}; it has {list(frame.columns)}")
    sub = frame[frame[between].isin([a, b])]
    dup = sub.duplicated([*keys, between])
    if dup.any():
        raise ValueError(f"paired_difference: {int(dup.sum())} duplicate rows per ({', '.join(keys)}, {between}); "
                         "average them first or add the column that tells them apart to the keys")
    wide = sub.pivot(index=keys, columns=between, values=value)
    for name in (a, b):
        if name not in wide.columns:
            raise ValueError(f"paired_difference: no rows with {between} == {name!r}")
    both = wide[[a, b]].dropna()
    if len(both) < len(wide):
        logger.info("paired_difference: %d of %d (%s) pairs lack %r or %r and are left out", len(wide) - len(both),
                    len(wide), ", ".join(keys), a, b)
    if both.empty:
        raise ValueError(f"paired_difference: {a!r} and {b!r} share no ({', '.join(keys)}) pair")
    diff = (both[a] - both[b]).to_numpy()
    if seed is None:
        est = bootstrap_ci(diff, np.mean, method=method, level=level, n_resamples=n_resamples, rng=rng)
        return Estimate(est.estimate, est.low, est.high, est.level, est.n, f"{est.method} (paired difference)")
    if method.lower() != "percentile":
        raise ValueError(f"method={method!r} is not available with seeds (two-level bootstrap): use 'percentile'")
    idx = both.index
    return hierarchical_bootstrap(diff, idx.get_level_values(seed), idx.get_level_values(unit), scheme=scheme,
                                  seed_t=seed_t, level=level, n_resamples=n_resamples, rng=rng)


# ---------------------------------------------------------------------------------------------
# correlation within groups


def _weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank) of a resample given as counts per row.

    values (n,), weights (B, n) integer counts -> (B, n): the rank row i would get in the
    materialised resample, the same as ``scipy.stats.rankdata`` of it.
    """
    uniq, inv = np.unique(values, return_inverse=True)  # tie groups in increasing order
    onehot = np.zeros((values.size, uniq.size))
    onehot[np.arange(values.size), inv] = 1.0
    group_w = weights @ onehot  # (B, n_tie_groups): copies per tie group
    below = np.cumsum(group_w, axis=1) - group_w  # (B, n_tie_groups): copies strictly smaller
    return (below + (group_w + 1.0) / 2.0)[:, inv]  # (B, n)


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r of each resample: x, y (B, n), w (B, n) counts -> (B,); NaN where a variable is constant."""
    total = w.sum(axis=1, keepdims=True)  # (B, 1)
    xc = x - (w * x).sum(axis=1, keepdims=True) / total  # (B, n)
    yc = y - (w * y).sum(axis=1, keepdims=True) / total  # (B, n)
    sxx, syy = (w * xc * xc).sum(axis=1), (w * yc * yc).sum(axis=1)  # (B,)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (w * xc * yc).sum(axis=1) / np.sqrt(sxx * syy)

    def constant(s: np.ndarray, v: np.ndarray) -> np.ndarray:
        # spread at rounding level of the values: the resample holds one distinct value
        return np.sqrt(s / total[:, 0]) <= 1e-12 * np.maximum(np.abs(v).max(axis=1), 1e-300)

    r[constant(sxx, x) | constant(syy, y)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _correlation(x: np.ndarray, y: np.ndarray, w: np.ndarray, method: str) -> np.ndarray:
    if method == "spearman":
        return _weighted_pearson(_weighted_ranks(x, w), _weighted_ranks(y, w), w)
    return _weighted_pearson(np.broadcast_to(x, w.shape), np.broadcast_to(y, w.shape), w)  # (B, n) views


def _check_corr(frame: pd.DataFrame, x: str, y: str, group: str | Sequence[str], method: str) -> list[str]:
    if method not in ("spearman", "pearson"):
        raise ValueError(f"unknown correlation {method!r}: use 'spearman' or 'pearson'")
    groups = [group] if isinstance(group, str) else list(group)
    missing = [c for c in (x, y, *groups) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; it has {list(frame.columns)}")
    return groups


def group_correlations(frame: pd.DataFrame, x: str, y: str, group: str | Sequence[str], *,
                       method: str = "spearman") -> pd.Series:
    """Correlation of ``x`` and ``y`` within each group (rows with NaN in x or y dropped);
    NaN for a group with fewer than 3 rows or a constant variable. Index: the group keys."""
    groups = _check_corr(frame, x, y, group, method)
    out = {}
    for key, g in frame.dropna(subset=[x, y]).groupby(groups, sort=True):
        xv, yv = g[x].to_numpy(np.float64), g[y].to_numpy(np.float64)
        ones = np.ones((1, xv.size))
        out[key[0] if len(groups) == 1 else key] = float(_correlation(xv, yv, ones, method)[0]) if xv.size >= 3 \
            else float("nan")
    return pd.Series(out, name=f"{method} r", dtype=np.float64)


def within_group_correlation(frame: pd.DataFrame, x: str, y: str, group: str | Sequence[str], *,
                             unit: str | None = None, seed: str | None = None, seed_t: bool = True,
                             method: str = "spearman", level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                             rng: RngLike = 0) -> Estimate:
    """Mean over groups of the within-group correlation, with a bootstrap interval over units.

    E.g. weight vs likelihood within each step (``group="step"``): a trend both variables follow
    across steps shifts every group alike and adds nothing here, while a correlation pooled over
    steps counts it. The estimate is the unweighted mean of :func:`group_correlations` over the
    groups where it is defined; with ``seed``, groups lie within seeds and the estimate is the
    mean over seeds of each seed's mean over its groups.

    Each replicate resamples units with replacement: within each group independently
    (``unit=None``), or one draw of ``unit`` ids shared by all groups and seeds (the same probe
    instances at every step: the crossed scheme of :func:`hierarchical_bootstrap`; each unit at
    most once per group), and recomputes every group's correlation (Spearman: average ranks of
    the resample) and their mean. With ``seed`` it also draws the seeds with replacement, and
    ``seed_t`` takes the hull with the t interval over per-seed means (one seed: no interval), as
    in :func:`hierarchical_bootstrap` (clipped to [-1, 1]). Percentile interval; ``n`` = the rows
    used, or with ``unit`` the distinct (seed, unit) pairs (the units resampled).
    """
    level, n_resamples = _level(level), _resamples(n_resamples)
    groups = _check_corr(frame, x, y, group, method)
    if seed is not None:
        if seed not in frame.columns:
            raise ValueError(f"frame lacks the seed column {seed!r}; it has {list(frame.columns)}")
        groups = [seed, *(g for g in groups if g != seed)]
    data = frame.dropna(subset=[x, y]).reset_index(drop=True)  # positions as row labels, for the unit lookup
    if unit is not None:
        if unit not in data.columns:
            raise ValueError(f"frame lacks the unit column {unit!r}; it has {list(data.columns)}")
        dup = data.duplicated([*groups, unit])
        if dup.any():
            raise ValueError(f"{int(dup.sum())} rows repeat a ({', '.join(groups)}, {unit}) pair: each unit once per group")
    seed_codes = np.zeros(len(data), dtype=np.int64) if seed is None else pd.factorize(data[seed], sort=True)[0]
    n_seeds = int(seed_codes.max()) + 1 if len(data) else 0
    parts = [g.index.to_numpy() for _, g in data.groupby(groups, sort=True) if len(g) >= 3]  # row positions
    part_seed = np.array([seed_codes[p[0]] for p in parts], dtype=np.int64)
    xs, ys = data[x].to_numpy(np.float64), data[y].to_numpy(np.float64)
    if unit is not None:
        unit_codes = pd.factorize(data[unit])[0]
        n_units = int(unit_codes.max()) + 1

    def seed_means(weights: Callable[[np.ndarray], np.ndarray], b: int) -> np.ndarray:
        """Per-seed mean over groups of the correlation of each resample: (b, S), NaN where none is defined."""
        sums, counts = np.zeros((b, max(n_seeds, 1))), np.zeros((b, max(n_seeds, 1)))
        for p, s in zip(parts, part_seed):
            r = _correlation(xs[p], ys[p], weights(p), method)  # (b,)
            ok = np.isfinite(r)
            sums[:, s] += np.where(ok, r, 0.0)
            counts[:, s] += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan)

    used = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    n = used.size if unit is None else len(set(zip(seed_codes[used].tolist(), unit_codes[used].tolist())))
    per_seed = seed_means(lambda p: np.ones((1, p.size)), 1)[0]  # (S,)
    defined = int(sum(np.isfinite(_correlation(xs[p], ys[p], np.ones((1, p.size)), method))[0] for p in parts))
    label = f"within-group {method}, mean over {defined} groups (percentile)"
    nan = float("nan")
    if not np.isfinite(per_seed).any():
        return Estimate(nan, nan, nan, level, n, label, n_seeds if seed is not None else None)
    estimate = float(np.nanmean(per_seed))
    if seed is None:
        t_interval = None
    else:
        label += ", seeds resampled" + (" hull with t over seeds" if seed_t else "")
        t_interval = seed_interval(per_seed[np.isfinite(per_seed)], level=level) if seed_t else None
        if seed_t and not t_interval.has_interval:
            return Estimate(estimate, nan, nan, level, n, label + " (no interval: one seed)", n_seeds)
    gen = np.random.default_rng(rng)
    reps = []
    chunk = max(1, _CHUNK // max(n, 1))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        if unit is not None:
            shared = _uniform_counts(gen, np.full(b, n_units), n_units).astype(np.float64)  # (b, U)
            means = seed_means(lambda p: shared[:, unit_codes[p]], b)  # (b, S)
        else:
            means = seed_means(lambda p: _uniform_counts(gen, np.full(b, p.size), p.size).astype(np.float64), b)
        if seed is None:
            reps.append(means[:, 0])
            continue
        m = _uniform_counts(gen, np.full(b, n_seeds), n_seeds).astype(np.float64)  # (b, S) copies of each seed
        m[~np.isfinite(means)] = 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            reps.append(np.nansum(m * np.nan_to_num(means), axis=1) / m.sum(axis=1))  # (b,)
    low, high = _percentile(np.concatenate(reps), level)
    if t_interval is not None:
        low, high = max(min(low, t_interval.low), -1.0), min(max(high, t_interval.high), 1.0)  # r lies in [-1, 1]
    return Estimate(estimate, low, high, level, n, label, n_seeds if seed is not None else None)


# ---------------------------------------------------------------------------------------------
# across seeds


def seed_interval(values: Any, *, level: float = LEVEL, n: int | None = None) -> Estimate:
    """Mean of per-seed values with a Student-t interval, mean ± t_{S−1} · sd / √S (sd with ddof=1).

    One seed: the mean with NaN bounds (no interval; :func:`verdict` says inconclusive). ``n``
    (optional) is the units each seed's value averages, recorded as ``n = n × S`` cells;
    by default ``n`` = the number of seeds.
    """
    level = _level(level)
    v = _values(values, "values")
    s = v.size
    if s == 0:
        raise ValueError("seed_interval: no per-seed values")
    mean = float(v.mean())
    total = s if n is None else int(n) * s
    if s < 2:
        return Estimate(mean, float("nan"), float("nan"), level, total, "t over seeds", s)
    half = float(sps.t.ppf((1.0 + level) / 2.0, s - 1) * v.std(ddof=1) / math.sqrt(s))
    return Estimate(mean, mean - half, mean + half, level, total, "t over seeds", s)


def seed_bands(frame: pd.DataFrame, *, value: str = "value", by: str | Sequence[str] = ("method", "step"),
               seed: str = "seed", level: float = LEVEL) -> pd.DataFrame:
    """Mean and t-interval across seeds for each ``by`` group (error bands on trajectories).

    Rows of one (``by``, ``seed``) are averaged first (one value per seed); rows with NaN
    ``value`` are left out, so ``n_seeds`` counts the seeds that have the value. Returns one row
    per group: the ``by`` columns, ``mean``, ``low``, ``high``, ``sd`` (across seeds, ddof=1),
    ``n_seeds``, ``level``; ``low`` / ``high`` (and ``sd``) are NaN where ``n_seeds`` is 1.
    """
    level = _level(level)
    keys = [by] if isinstance(by, str) else list(by)
    missing = [c for c in (*keys, seed, value) if c not in frame.columns]
    if missing:
        raise ValueError(f"seed_bands: frame lacks column(s) {missing}; it has {list(frame.columns)}")
    per_seed = frame.dropna(subset=[value]).groupby([*keys, seed], sort=True)[value].mean().reset_index()
    rows = []
    for key, g in per_seed.groupby(keys, sort=True):
        est = seed_interval(g[value].to_numpy(np.float64), level=level)
        sd = float(g[value].std(ddof=1)) if len(g) > 1 else float("nan")
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "mean": est.estimate,
                     "low": est.low, "high": est.high, "sd": sd, "n_seeds": est.n_seeds, "level": level})
    return pd.DataFrame(rows, columns=[*keys, "mean", "low", "high", "sd", "n_seeds", "level"])


# ---------------------------------------------------------------------------------------------
# the verdict rule


def verdict(interval: Estimate | None, boundary: float | None = None, direction: str | None = None) -> str:
    """The verdict of a finding from the interval of its tested quantity.

    The claim says the quantity is ``direction`` (``"greater"`` / ``">"`` or ``"less"`` / ``"<"``)
    than ``boundary``. *supports*: the whole interval lies strictly on the claim's side;
    *contradicts*: strictly on the other side; otherwise, or without an interval (NaN bounds,
    ``None``), *inconclusive*. With neither ``boundary`` nor ``direction`` the finding is a
    measurement no claim is made about: *describes*.
    """
    if boundary is None and direction is None:
        return DESCRIBES
    if boundary is None or direction is None:
        raise ValueError("verdict needs both boundary= and direction= for a claim (or neither, for 'describes')")
    side = _DIRECTIONS.get(direction)
    if side is None:
        raise ValueError(f"unknown direction {direction!r}: use 'greater' or 'less' (the claim: quantity > or < boundary)")
    boundary = float(boundary)
    if not math.isfinite(boundary):
        raise ValueError(f"boundary must be finite, got {boundary}")
    if interval is None or not interval.has_interval:
        return INCONCLUSIVE
    above, below = interval.low > boundary, interval.high < boundary
    if side == "greater":
        return SUPPORTS if above else CONTRADICTS if below else INCONCLUSIVE
    return SUPPORTS if below else CONTRADICTS if above else INCONCLUSIVE
