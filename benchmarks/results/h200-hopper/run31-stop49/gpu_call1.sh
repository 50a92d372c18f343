#!/usr/bin/env bash
# Stop 49, call 1 (one H200): the staged racecheck probe (run30's gpu_next_racecheck.sh), stop
# 48's GPU checks (h200x2-distributed/gpu_next_documents.sh, one-GPU part) and the test files
# stop 48 touched, compiled for the GPU, on 6 shards; all three at once.
#   OUT=DIR bash benchmarks/results/h200-hopper/run31-stop49/gpu_call1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" >> $OUT/gpu.txt
git rev-parse HEAD >> $OUT/gpu.txt 2>/dev/null
OUT=$OUT/racecheck bash benchmarks/results/h200-hopper/run30-kv-split/gpu_next_racecheck.sh > $OUT/racecheck.log 2>&1 &
OUT=$OUT/documents bash benchmarks/results/h200x2-distributed/gpu_next_documents.sh > $OUT/documents.log 2>&1 &
bash benchmarks/gpu_shards.sh "tests/test_distributed.py tests/test_dynamic_layouts.py tests/test_real_batches.py tests/test_compile_values.py tests/test_attention.py" \
  8 ${SHARDLIMIT:-420} $OUT/shards > $OUT/shards.log 2>&1 &
wait
cat $OUT/gpu.txt; echo "== racecheck"; cat $OUT/racecheck.log | cut -c1-400; echo "== documents"; cat $OUT/documents.log | tail -12
echo "== shards"; cat $OUT/shards.log | tail -40
