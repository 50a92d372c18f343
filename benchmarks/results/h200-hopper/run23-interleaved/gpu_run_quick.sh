#!/usr/bin/env bash
# run23 call 10: benchmarks/run.py with its new interleaved timing, on the GPU for the first time
# (the dense quick suite: d=128, 16K, causal and not; ours, FlexAttention, SDPA flash and cuDNN):
#   OUT=DIR bash benchmarks/results/h200-hopper/run23-interleaved/gpu_run_quick.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout ${PLIMIT:-200} python -m benchmarks.run --suite dense --quick --impls ours,flex,sdpa_flash,sdpa_cudnn \
  --estimate-device h200 --no-plots --out $OUT/run_quick > $OUT/run_quick.log 2>&1
echo "rc=$?" >> $OUT/run_quick.log
tail -n 30 $OUT/run_quick.log
