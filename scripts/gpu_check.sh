#!/usr/bin/env bash
# GPU check for the scale work (docs/scale.md): the CUDA tests (pytest -m cuda) and the ~1B-parameter
# benchmark in bf16 on one GPU, printing one table. Budget: <= 8 minutes on one H100/H200-class GPU.
#
#   bash scripts/gpu_check.sh            # from the repository root, on a machine with a CUDA GPU
#
# Environment:
#   PYTHON        interpreter with torch (CUDA build) and transformers (default: python3)
#   OUT           folder to copy the logs and the benchmark table into (optional)
#   .whl/*.whl    if present, installed first into /tmp/site (packages missing on the GPU machine,
#                 e.g. datasets, dill, multiprocess: see docs/scale.md)
#   .gpu-cache/   if present, used as GEFFECT_CACHE (a prebuilt default small model, so the training
#                 test does not spend its time building one)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
[ -d .gpu-cache ] && export GEFFECT_CACHE=$PWD/.gpu-cache
LOG=${OUT:-benchmarks/results}
mkdir -p "$LOG" benchmarks/results

"$PY" - <<'PY' || exit 1
import torch, transformers
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; transformers {transformers.__version__}")
PY

echo "== 1/2 CUDA tests (pytest -m cuda) =="
timeout 290 "$PY" -m pytest -q -s -m cuda tests/geffect/test_cuda.py -p no:cacheprovider 2>&1 | tee "$LOG/gpu_tests.log"
tests_rc=${PIPESTATUS[0]}

echo "== 2/2 benchmark: ~1B Llama, bf16, N = 8, T = 256 =="
timeout 170 "$PY" benchmarks/bench_scale.py --device cuda --dtype bfloat16 --sizes 1B --no-opacus \
  --tolerance 5e-2 --tag cuda_bf16 2>&1 | tee "$LOG/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then cp benchmarks/results/bench_scale_cuda_bf16.* "$OUT"/ 2>/dev/null || true; fi

echo "== gpu_check: tests exit $tests_rc, benchmark exit $bench_rc =="
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
