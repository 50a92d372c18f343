#!/usr/bin/env bash
# Stop 49, first call on a warm H200 (device time was short: racecheck, GPU tests and the
# d=128 timing in one call). At once: the racecheck probe (run30's gpu_next_racecheck.sh), the
# one-GPU part of stop 48's checks (h200x2-distributed/gpu_next_documents.sh) and the dropout
# GPU tests (tests_dropout.txt, 8 shards); then, alone on the GPU, the A/B of the dropout draws
# at d=128 (gpu_call2.sh's parity.py --variants).
#   OUT=DIR bash benchmarks/results/h200-hopper/run31-stop49/gpu_callA.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader > $OUT/gpu.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" >> $OUT/gpu.txt
OUT=$OUT/racecheck SLIMIT=${SLIMIT:-60} bash benchmarks/results/h200-hopper/run30-kv-split/gpu_next_racecheck.sh > $OUT/racecheck.log 2>&1 &
OUT=$OUT/documents timeout 230 bash benchmarks/results/h200x2-distributed/gpu_next_documents.sh > $OUT/documents.log 2>&1 &
bash benchmarks/gpu_shards.sh @benchmarks/results/h200-hopper/run31-stop49/tests_dropout.txt \
  8 ${TLIMIT:-220} $OUT/tests > /dev/null 2>&1 &
wait
for f in $OUT/tests/pytest_shard*.txt; do echo "== $f"; tail -n 2 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -60 >> $OUT/tests.txt
rm -rf $OUT/tests
cat $OUT/gpu.txt; echo "== racecheck"; cut -c1-400 $OUT/racecheck.log; echo "== documents"; tail -12 $OUT/documents.log
echo "== dropout tests"; grep -h -E "passed|failed|FAILED|ERROR|^E " $OUT/tests.txt | cut -c1-300 | head -30
NOTESTS=1 DIMS=128 VLIMIT=${VLIMIT:-175} OUT=$OUT bash benchmarks/results/h200-hopper/run31-stop49/gpu_call2.sh
