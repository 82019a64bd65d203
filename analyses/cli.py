"""The study command line: ``python -m analyses tofu|muse|wmdp [options]``.

The first argument names the study (a benchmark of :data:`analyses.studies.BENCHMARKS`); the
rest is parsed into that benchmark's config class (:func:`analyses.config.parse_study_args`:
every field a flag, ``--quick`` presets). :func:`main` runs :func:`analyses.pipeline.run_study`
and logs the findings; :func:`run_cli` exits with :func:`exit_code`. ``python -m
analyses.geffect_tofu`` / ``geffect_muse`` / ``geffect_wmdp`` are the old names of the three
commands, kept as aliases (:func:`alias`) until the next release.
"""
from __future__ import annotations

import importlib
import logging
import sys
import warnings
from typing import Any, Callable, NoReturn, Sequence

from analyses.config import parse_study_args
from analyses.pipeline import run_study
from analyses.studies import BENCHMARKS

__all__ = ["PROG", "STUDIES", "alias", "exit_code", "main", "run_cli"]

PROG = "python -m analyses"
NOISY_LOGGERS = ("httpx", "urllib3", "choreographer", "kaleido", "matplotlib")
#: the study names ``python -m analyses`` takes, in the order its help lists them
STUDIES = tuple(BENCHMARKS)


def _benchmark(study: str) -> type:
    if study not in BENCHMARKS:
        raise ValueError(f"unknown study {study!r}; choose one of {', '.join(STUDIES)} "
                         f"(e.g. {PROG} tofu --quick)")
    return BENCHMARKS[study]


def description(study: str) -> str:
    """The ``--help`` description of a study: the first paragraph of its benchmark module's docstring."""
    module = importlib.import_module(_benchmark(study).__module__)
    return (module.__doc__ or "").strip().split("\n\n")[0].replace("``", "")


def main(argv: Sequence[str] | None = None, *, study: str = "tofu") -> dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``study``'s config, run it, log its findings; returns the summary."""
    prog = f"{PROG} {study}"
    config = parse_study_args(argv, prog=prog, description=description(study), config_class=_benchmark(study).config_class)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger(f"analyses.{study}")
    summary = run_study(config)
    log.info("findings:\n%s", "\n".join(f"- {f['text']}" for f in summary["findings"]))
    log.info("wall time %.1fs, CPU time %.1fs, peak memory %.0f MiB; report: %s", summary["timings"]["total_s"],
             summary.get("cpu_s", float("nan")), summary["peak_memory_mb"], summary["report"])
    if summary.get("failed"):
        log.error("methods that failed: %s", summary["failed"])
    return summary


def exit_code(summary: dict, allow_failed_gate: bool = False) -> int:
    """0 when everything ran; 1 when a method failed; 2 when the sanity gate failed (unless allowed)."""
    if not summary.get("gate_passed", True) and not allow_failed_gate:
        return 2
    return 1 if summary.get("failed") else 0


def usage() -> str:
    lines = [f"usage: {PROG} {{{','.join(STUDIES)}}} [options]  (--help after a study lists its options)", ""]
    lines += [f"  {name:6s}{description(name)}" for name in STUDIES]
    return "\n".join(lines)


def run_cli(argv: Sequence[str] | None = None, *, study: str | None = None) -> NoReturn:
    """``python -m analyses``: the study named by the first argument (or ``study``), then ``sys.exit`` with its
    :func:`exit_code` (2 with the usage when no known study is named)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if study is None:
        if not argv or argv[0] in ("-h", "--help"):
            print(usage())
            sys.exit(0 if argv else 2)
        study, argv = argv[0], argv[1:]
        if study not in BENCHMARKS:
            print(f"{PROG}: unknown study {study!r}\n\n{usage()}", file=sys.stderr)
            sys.exit(2)
    summary = main(argv, study=study)
    sys.exit(exit_code(summary, summary["config"]["study"]["allow_failed_gate"]))


def alias(study: str, old_module: str) -> tuple[Callable[..., dict[str, Any]], Callable[[], NoReturn]]:
    """``(main, run)`` of a deprecated ``python -m analyses.geffect_<study>`` module: :func:`main` and
    :func:`run_cli` of ``study``.

    Importing the old module warns (``DeprecationWarning``); running it warns once more
    (``FutureWarning``, which command-line users see) before the study runs.
    """
    new = f"{PROG} {study}"
    warnings.warn(f"{old_module} is the old name of `{new}`; it goes in the next release", DeprecationWarning,
                  stacklevel=3)

    def old_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
        return main(argv, study=study)

    def run() -> NoReturn:
        warnings.warn(f"`python -m {old_module}` is now `{new}`; the old command goes in the next release",
                      FutureWarning, stacklevel=2)
        run_cli(study=study)

    return old_main, run
