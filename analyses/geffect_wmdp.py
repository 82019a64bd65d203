"""The G-effect study on WMDP (Li et al. 2024): ``python -m analyses.geffect_wmdp``.

With no arguments it runs offline on the embedded WMDP-style hazard analogue (invented,
non-actionable) on a CPU: prepares (or reuses) a small target model that knows the hazard
corpora and a retain model that does not, unlearns the forget corpora with RMU (the official
WMDP preset), GA, GD, NPO, WGA, TNPO, SimSat, SimImp, SatImp and WAGLE-masked / random-masked
GD while tracking G-effects and token weights, evaluates every model's zero-shot accuracy on
the hazard questions (WMDP bio, cyber) and on the utility questions (MMLU's analogue), and
writes ``outputs/geffect_wmdp/report.html``. Examples::

    python -m analyses.geffect_wmdp                                   # the default study (~5 min, 2 CPUs)
    python -m analyses.geffect_wmdp --quick --output-dir /tmp/wmdp    # a one-minute smoke run
    python -m analyses.geffect_wmdp --data path/to/wmdp               # questions, corpora and mmlu in one folder
    python -m analyses.geffect_wmdp --model HuggingFaceH4/zephyr-7b-beta --data cais/wmdp \\
        --corpora path/to/wmdp-corpora --methods rmu,npo --max-length 512 --device cuda --bf16

Re-running with the same arguments reuses cached models and every finished method; see
docs/analyses.md.
"""
from __future__ import annotations

from analyses.studies.wmdp import WmdpStudyConfig
from analyses.cli import exit_code
from analyses.cli import main as _main
from analyses.cli import run_cli

__all__ = ["exit_code", "main"]

PROG = "python -m analyses.geffect_wmdp"


def main(argv: list[str] | None = None) -> dict:
    """Run the WMDP study on ``argv`` (default ``sys.argv[1:]``); returns the summary."""
    return _main(argv, config_class=WmdpStudyConfig, prog=PROG, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    run_cli(WmdpStudyConfig, PROG, __doc__.split("\n\n")[0])
