"""The G-effect study on TOFU-style data: ``python -m analyses.geffect_tofu``.

With no arguments it runs offline on the embedded benchmark on a CPU: prepares (or reuses)
the default target and retain models, unlearns forget10 with GA, GD, NPO, WGA, TNPO, SimSat,
SimImp, SatImp and WAGLE-masked GD while tracking G-effects and token weights, evaluates
every model, and writes ``outputs/geffect_tofu/report.html`` with the plots, a metrics
table, the run configuration and findings computed from the data. Examples::

    python -m analyses.geffect_tofu                                   # the default study (~5-10 min, 2 CPUs)
    python -m analyses.geffect_tofu --quick --output-dir /tmp/smoke   # a one-minute smoke run
    python -m analyses.geffect_tofu --data path/to/tofu --split forget01 --max-authors 10
    python -m analyses.geffect_tofu --model runs/phi15_tofu --retain-model runs/phi15_retain90 \\
        --data locuslab/TOFU --split forget10 --bf16 --device cuda --epochs 5 --batch-size 4 --grad-accum 4

Re-running with the same arguments reuses cached models and every finished method
(``runs/<method>/study_done.json``); see docs/analyses.md.
"""
from __future__ import annotations

import logging
import sys

from analyses.config import parse_study_args
from analyses.pipeline import run_study

logger = logging.getLogger("analyses.geffect_tofu")


def main(argv: list[str] | None = None) -> dict:
    config = parse_study_args(argv, description=__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "choreographer", "kaleido", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    summary = run_study(config)
    logger.info("findings:\n%s", "\n".join(f"- {f['text']}" for f in summary["findings"]))
    logger.info("wall time %.1fs, peak memory %.0f MiB; report: %s", summary["timings"]["total_s"],
                summary["peak_memory_mb"], summary["report"])
    if summary.get("failed"):
        logger.error("methods that failed: %s", summary["failed"])
    return summary


def exit_code(summary: dict, allow_failed_gate: bool = False) -> int:
    """0 when everything ran; 1 when a method failed; 2 when the sanity gate failed (unless allowed)."""
    if not summary.get("gate_passed", True) and not allow_failed_gate:
        return 2
    return 1 if summary.get("failed") else 0


if __name__ == "__main__":
    _summary = main()
    sys.exit(exit_code(_summary, _summary["config"]["study"]["allow_failed_gate"]))
