"""The study command lines: ``python -m analyses.geffect_tofu`` / ``geffect_muse`` / ``geffect_wmdp``.

Each parses its benchmark's config class (``analyses.config.parse_study_args``: every field a
flag, ``--quick`` presets), runs :func:`analyses.pipeline.run_study`, logs the findings, and exits
with :func:`exit_code`.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from analyses.config import StudyConfig, parse_study_args
from analyses.pipeline import run_study

__all__ = ["exit_code", "main", "run_cli"]

NOISY_LOGGERS = ("httpx", "urllib3", "choreographer", "kaleido", "matplotlib")


def main(argv: list[str] | None = None, *, config_class: type = StudyConfig, prog: str = "python -m analyses.geffect_tofu",
         description: str | None = None) -> dict[str, Any]:
    """Parse ``argv`` into ``config_class``, run the study, log its findings; returns the summary."""
    config = parse_study_args(argv, prog=prog, description=description, config_class=config_class)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger(prog.split()[-1])
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


def run_cli(config_class: type, prog: str, description: str) -> None:
    """``main`` on ``sys.argv`` and ``sys.exit`` with its :func:`exit_code`."""
    summary = main(config_class=config_class, prog=prog, description=description)
    sys.exit(exit_code(summary, summary["config"]["study"]["allow_failed_gate"]))
