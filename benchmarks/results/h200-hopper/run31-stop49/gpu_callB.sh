#!/usr/bin/env bash
# Stop 49, second call on the same warm H200: the test files stop 48 touched, compiled for the
# GPU (8 shards), then, alone on the GPU, the A/B of the dropout draws at d=64.
#   OUT=DIR bash benchmarks/results/h200-hopper/run31-stop49/gpu_callB.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
bash benchmarks/gpu_shards.sh "tests/test_distributed.py tests/test_dynamic_layouts.py tests/test_real_batches.py tests/test_compile_values.py" \
  8 ${SHARDLIMIT:-220} $OUT/shards > $OUT/shards.log 2>&1
tail -40 $OUT/shards.log
NOTESTS=1 DIMS=64 VLIMIT=${VLIMIT:-175} OUT=$OUT bash benchmarks/results/h200-hopper/run31-stop49/gpu_call2.sh
