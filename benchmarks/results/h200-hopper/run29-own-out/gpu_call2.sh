#!/usr/bin/env bash
# run29 call 2: a second A/B of persistent CTAs with run-time tiles (pd) at d=128 (dense and
# benchmarks/hopper.py's sparse cases) and of the d=64 output in buffers of its own (own64,
# dense), 4 rounds, no peers:
#   OUT=DIR bash benchmarks/results/h200-hopper/run29-own-out/gpu_call2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
P=benchmarks/results/h200-hopper/run29-own-out/out_probe.py
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
timeout ${PLIMIT1:-330} python $P --out $OUT/d128 --dims 128 --all-sparse --rounds 4 --variants ours,pd \
  --dense 4096c,8192c,16384c,16384 > $OUT/d128.log 2>&1
echo "rc=$?" >> $OUT/d128.log
timeout ${PLIMIT2:-200} python $P --out $OUT/d64 --dims 64 --no-sparse --rounds 4 --variants ours,own64 \
  --dense 4096c,16384c,4096,16384 > $OUT/d64.log 2>&1
echo "rc=$?" >> $OUT/d64.log
cat $OUT/d128/summary.txt $OUT/d64/summary.txt > $OUT/summary.txt 2>/dev/null
cat $OUT/summary.txt; tail -n 3 $OUT/d128.log $OUT/d64.log
