"""The benchmarks the G-effect study runs on: TOFU, MUSE and WMDP.

:class:`analyses.pipeline.Study` is one pipeline; a benchmark is an implementation of
:class:`analyses.benchmarks.base.Benchmark` chosen by the class of the study's config::

    from analyses.benchmarks import benchmark_for
    from analyses.benchmarks.muse import MuseStudyConfig
    bench = benchmark_for(MuseStudyConfig())        # MuseBenchmark

========  ==============================  ============================================
name      config (CLI)                    module
========  ==============================  ============================================
tofu      ``analyses.config.StudyConfig``  :mod:`analyses.benchmarks.tofu` (``python -m analyses.geffect_tofu``)
muse      ``MuseStudyConfig``              :mod:`analyses.benchmarks.muse` (``python -m analyses.geffect_muse``)
wmdp      ``WmdpStudyConfig``              :mod:`analyses.benchmarks.wmdp` (``python -m analyses.geffect_wmdp``)
========  ==============================  ============================================
"""
from __future__ import annotations

from analyses.benchmarks.base import Axes, Benchmark
from analyses.benchmarks.muse import MuseBenchmark, MuseStudyConfig
from analyses.benchmarks.tofu import TofuBenchmark
from analyses.benchmarks.wmdp import WmdpBenchmark, WmdpStudyConfig
from analyses.config import BaseStudyConfig

__all__ = ["BENCHMARKS", "Axes", "Benchmark", "MuseBenchmark", "MuseStudyConfig", "TofuBenchmark", "WmdpBenchmark",
           "WmdpStudyConfig", "benchmark_for"]

#: name -> benchmark class
BENCHMARKS: dict[str, type[Benchmark]] = {b.name: b for b in (TofuBenchmark, MuseBenchmark, WmdpBenchmark)}


def benchmark_for(config: BaseStudyConfig) -> Benchmark:
    """The benchmark whose config class ``config`` is (the most specific match)."""
    matches = [b for b in BENCHMARKS.values() if isinstance(config, b.config_class)]
    if not matches:
        raise TypeError(f"no benchmark takes a {type(config).__name__}; use one of "
                        f"{[b.config_class.__name__ for b in BENCHMARKS.values()]}")
    best = max(matches, key=lambda b: len(b.config_class.__mro__))
    return best(config)
