"""The G-effect study on MUSE (Shi et al. 2024): ``python -m analyses.geffect_muse``.

With no arguments it runs offline on the embedded MUSE-style news corpus on a CPU: prepares
(or reuses) a small target model trained on the forget and retain documents and a retain model
trained without the forget ones, unlearns the forget documents with GA, GD, NPO, WGA, TNPO,
SimSat, SimImp, SatImp and WAGLE-masked / random-masked GD while tracking G-effects and token
weights on forget and retain chunks, evaluates every model with MUSE's VerbMem, KnowMem and
PrivLeak, and writes ``outputs/geffect_muse/report.html``. Examples::

    python -m analyses.geffect_muse                                   # the default study (~5 min, 2 CPUs)
    python -m analyses.geffect_muse --quick --output-dir /tmp/muse    # a one-minute smoke run
    python -m analyses.geffect_muse --data path/to/muse_news          # a folder in muse_bench's layout
    python -m analyses.geffect_muse --model muse-bench/MUSE-news_target --data muse-bench/MUSE-News \\
        --retain-model muse-bench/MUSE-news_retrain --max-length 2048 --packing concat --device cuda --bf16

Re-running with the same arguments reuses cached models and every finished method; see
docs/analyses.md.
"""
from __future__ import annotations

from analyses.studies.muse import MuseStudyConfig
from analyses.cli import exit_code
from analyses.cli import main as _main
from analyses.cli import run_cli

__all__ = ["exit_code", "main"]

PROG = "python -m analyses.geffect_muse"


def main(argv: list[str] | None = None) -> dict:
    """Run the MUSE study on ``argv`` (default ``sys.argv[1:]``); returns the summary."""
    return _main(argv, config_class=MuseStudyConfig, prog=PROG, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    run_cli(MuseStudyConfig, PROG, __doc__.split("\n\n")[0])
