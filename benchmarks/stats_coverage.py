"""Coverage of the study's intervals (analyses.stats) on synthetic data with a known mean.

Not a speed benchmark: a calibration. For each layout it draws ``--reps`` data sets whose true
mean is 0, computes each interval scheme's 95% interval and counts how often it contains 0
(coverage; Monte-Carlo sd sqrt(0.95 * 0.05 / reps) = 0.013 at 300 reps) and its mean width.

- one level: n = 50 normal or exponential values, percentile and BCa (``bootstrap_ci``);
- two levels: S seeds x 40 units, value = seed offset (sd ``seed_sd``) + unit effect (sd 0.5)
  + noise (sd 1). ``truth=crossed``: the same 40 units (rows) in every seed, their effect shared;
  ``truth=nested``: fresh units per seed. Schemes: ``hierarchical_bootstrap`` nested / crossed,
  each alone (``seed_t=False``) and as the hull with the t interval over seeds (the default),
  and the t interval over per-seed means alone (``seed_interval``);
- the Monte-Carlo error of a percentile endpoint at the default 2000 replicates (sd over 50
  generator seeds, one data set), and the time of one call.

    python benchmarks/stats_coverage.py              # 300 reps (~5 min on one core)
    python benchmarks/stats_coverage.py --reps 40    # a quick look

Writes benchmarks/results/stats_coverage.{json,md}.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from analyses.stats import (bootstrap_ci, hierarchical_bootstrap, seed_interval,  # noqa: E402
                            within_group_correlation)
from geffect.io import atomic_write_json, atomic_write_text  # noqa: E402

logger = logging.getLogger("stats_coverage")
UNITS = 40


def one_level(reps: int) -> list[dict]:
    rows = []
    for dist in ("normal", "exponential"):
        for method in ("percentile", "bca"):
            gen = np.random.default_rng(2)
            hits, width = 0, 0.0
            for i in range(reps):
                x = gen.normal(0.0, 1.0, 50) if dist == "normal" else gen.exponential(1.0, 50) - 1.0
                est = bootstrap_ci(x, method=method, n_resamples=1000, rng=i)
                hits += est.contains(0.0)
                width += est.width / reps
            rows.append({"data": f"{dist}, n=50", "scheme": method, "coverage": hits / reps, "width": width})
            logger.info("%s", rows[-1])
    return rows


def two_level(reps: int) -> list[dict]:
    schemes = [("nested", False), ("nested", True), ("crossed", False), ("crossed", True)]
    rows = []
    for truth in ("crossed", "nested"):
        for seeds in (3, 5, 10):
            for seed_sd in (0.0, 0.2, 1.0):
                gen = np.random.default_rng(123)
                seed = np.repeat(np.arange(seeds), UNITS)
                unit = np.tile(np.arange(UNITS), seeds)
                hits = dict.fromkeys([*(f"{s}{' + t hull' if t else ''}" for s, t in schemes), "t over seeds"], 0)
                width = dict.fromkeys(hits, 0.0)
                for r in range(reps):
                    units = (np.tile(gen.normal(0.0, 0.5, UNITS), seeds) if truth == "crossed"
                             else gen.normal(0.0, 0.5, seeds * UNITS))
                    v = np.repeat(gen.normal(0.0, seed_sd, seeds), UNITS) + units + gen.normal(0.0, 1.0, seeds * UNITS)
                    ests = {f"{s}{' + t hull' if t else ''}": hierarchical_bootstrap(v, seed, unit, scheme=s, seed_t=t,
                                                                                     n_resamples=1000, rng=r)
                            for s, t in schemes}
                    ests["t over seeds"] = seed_interval(v.reshape(seeds, UNITS).mean(1))
                    for k, est in ests.items():
                        hits[k] += est.contains(0.0)
                        width[k] += est.width / reps
                for k in hits:
                    rows.append({"truth": truth, "seeds": seeds, "seed_sd": seed_sd, "scheme": k,
                                 "coverage": hits[k] / reps, "width": width[k]})
                logger.info("truth=%s S=%d seed_sd=%.1f %s", truth, seeds, seed_sd,
                            {k: round(hits[k] / reps, 3) for k in hits})
    return rows


def monte_carlo_and_time() -> dict:
    x = np.random.default_rng(0).normal(0.0, 1.0, 200)
    lows = np.array([bootstrap_ci(x, rng=i).low for i in range(50)])
    width = bootstrap_ci(x).width
    out = {"endpoint_sd_over_width_B2000": float(lows.std(ddof=1) / width)}
    for seeds, units in ((5, 40), (5, 400)):
        seed, unit = np.repeat(np.arange(seeds), units), np.tile(np.arange(units), seeds)
        v = np.random.default_rng(1).normal(size=seeds * units)
        for scheme in ("nested", "crossed"):
            start = time.perf_counter()
            hierarchical_bootstrap(v, seed, unit, scheme=scheme)
            out[f"seconds_{scheme}_{seeds}x{units}"] = time.perf_counter() - start
    frame = pd.DataFrame({"step": np.repeat(np.arange(5), 40), "x": np.arange(200.0) % 7, "y": np.arange(200.0) % 5})
    start = time.perf_counter()
    within_group_correlation(frame, "x", "y", "step")
    out["seconds_within_group_spearman_5x40"] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300, help="data sets per layout")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="results folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    result = {"reps": args.reps, "one_level": one_level(args.reps), "two_level": two_level(args.reps),
              "monte_carlo": monte_carlo_and_time()}
    result["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "stats_coverage.json", result)
    one = pd.DataFrame(result["one_level"])
    two = pd.DataFrame(result["two_level"])

    def table(values: str) -> str:
        wide = two.pivot_table(index=["truth", "seeds", "seed_sd"], columns="scheme", values=values, sort=False)
        return wide.reset_index().to_markdown(index=False, floatfmt=".3f")

    md = [f"# Coverage of 95% intervals ({args.reps} data sets per row; Monte-Carlo sd about "
          f"{np.sqrt(0.95 * 0.05 / args.reps):.3f})", "", "## One level (n = 50)", "",
          one.to_markdown(index=False, floatfmt=".3f"), "", "## Two levels (S seeds x 40 units): coverage", "",
          table("coverage"), "", "## Two levels: mean width", "", table("width"), "", "## Monte-Carlo error and time", "",
          *(f"- {k}: {v:.3g}" for k, v in result["monte_carlo"].items()), ""]
    atomic_write_text(args.out / "stats_coverage.md", "\n".join(md))
    logger.info("wrote %s (%.0f s)", args.out / "stats_coverage.md", result["seconds"])
    return result


if __name__ == "__main__":
    main()
