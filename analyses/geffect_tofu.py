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

from analyses.cli import exit_code
from analyses.cli import main as _main
from analyses.cli import run_cli
from analyses.config import StudyConfig

__all__ = ["exit_code", "main"]

PROG = "python -m analyses.geffect_tofu"


def main(argv: list[str] | None = None) -> dict:
    """Run the TOFU study on ``argv`` (default ``sys.argv[1:]``); returns the summary."""
    return _main(argv, config_class=StudyConfig, prog=PROG, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    run_cli(StudyConfig, PROG, __doc__.split("\n\n")[0])
