"""The studies: what the G-effect study runs on each benchmark (TOFU, MUSE, WMDP).

:class:`analyses.pipeline.Study` is one pipeline; a benchmark is an implementation of
:class:`analyses.studies.base.Benchmark` chosen by the class of the study's config::

    from analyses.studies import benchmark_for
    from analyses.studies.muse import MuseStudyConfig
    bench = benchmark_for(MuseStudyConfig())        # MuseBenchmark

========  ==============================  ============================================
name      config (CLI)                    module
========  ==============================  ============================================
tofu      ``analyses.config.StudyConfig``  :mod:`analyses.studies.tofu` (``python -m analyses tofu``)
muse      ``MuseStudyConfig``              :mod:`analyses.studies.muse` (``python -m analyses muse``)
wmdp      ``WmdpStudyConfig``              :mod:`analyses.studies.wmdp` (``python -m analyses wmdp``)
========  ==============================  ============================================

(This package was ``analyses.benchmarks`` before; that name now belongs to the top-level
``benchmarks/`` speed measurements, and ``analyses.benchmarks`` stays importable, with a
deprecation warning, for one release.)
"""
from __future__ import annotations

from analyses.config import BaseStudyConfig
from analyses.studies.base import Axes, Benchmark
from analyses.studies.muse import MuseBenchmark, MuseStudyConfig
from analyses.studies.tofu import TofuBenchmark
from analyses.studies.wmdp import WmdpBenchmark, WmdpStudyConfig

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
