"""The G-effect studies: ``python -m analyses tofu|muse|wmdp [options]``.

Each study prepares (or reuses) a small target model that knows the forget set and a retain
model that never saw it, unlearns the forget set with GA, GD, NPO, WGA, TNPO, SimSat, SimImp,
SatImp and WAGLE-masked / random-masked GD while tracking G-effects, PG-effects and token
weights, evaluates every model with the benchmark's metrics, tests the findings, and writes
``outputs/geffect_<study>/report.html``. With no options it runs offline on the embedded data on
a CPU (about 5-10 minutes on 2 cores)::

    python -m analyses tofu                                    # TOFU: ES, probability, ROUGE-L, forget quality
    python -m analyses tofu --quick --output-dir /tmp/smoke    # a one-minute smoke run
    python -m analyses tofu --data path/to/tofu --split forget01 --max-authors 10
    python -m analyses tofu --model runs/phi15_tofu --retain-model runs/phi15_retain90 \\
        --data locuslab/TOFU --split forget10 --bf16 --device cuda --num-train-epochs 5 \\
        --per-device-train-batch-size 4 --gradient-accumulation-steps 4
    python -m analyses muse                                    # MUSE: VerbMem, KnowMem, PrivLeak
    python -m analyses muse --model muse-bench/MUSE-news_target --data muse-bench/MUSE-News \\
        --retain-model muse-bench/MUSE-news_retrain --max-length 2048 --packing concat --device cuda --bf16
    python -m analyses wmdp                                    # WMDP: hazard and utility accuracy, RMU
    python -m analyses wmdp --model HuggingFaceH4/zephyr-7b-beta --data cais/wmdp \\
        --corpora path/to/wmdp-corpora --methods rmu,npo --max-length 512 --device cuda --bf16

``python -m analyses <study> --help`` lists every option. Re-running with the same arguments
reuses the cached models and every finished method (``runs/<method>/study_done.json``); see
docs/analyses.md. The exit status is 0 when everything ran, 1 when a method failed and 2 when
the sanity gate failed (``--allow-failed-gate`` runs the unlearning stages anyway).
"""
from analyses.cli import run_cli

if __name__ == "__main__":
    run_cli()
