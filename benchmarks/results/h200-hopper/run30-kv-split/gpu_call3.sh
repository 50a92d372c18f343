#!/usr/bin/env bash
# run30 call 3: kvsplit_probe.py at d=64 (two Q buffers, with the output copy, persistent CTAs
# with run-time tiles, split release) and a second d=128 sample of split2-pdq:
#   OUT=DIR bash benchmarks/results/h200-hopper/run30-kv-split/gpu_call3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
P=benchmarks/results/h200-hopper/run30-kv-split/kvsplit_probe.py
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
timeout ${PLIMIT1:-250} python $P --out $OUT/d64 --dims 64 --dense 4096c,16384c,4096,16384 --all-sparse \
  --rounds 3 --heat 1.0 --variants ours,q2,q2-out,pdq,split-pdq > $OUT/d64.log 2>&1
echo "rc=$?" >> $OUT/d64.log
timeout ${PLIMIT2:-250} python $P --out $OUT/d128 --dims 128 --dense 4096c,8192c,16384c,4096,16384 --all-sparse \
  --rounds 3 --heat 1.0 --variants ours,split2-pdq > $OUT/d128.log 2>&1
echo "rc=$?" >> $OUT/d128.log
cat $OUT/d64/summary.txt $OUT/d128/summary.txt > $OUT/summary.txt 2>/dev/null
cat $OUT/summary.txt; tail -n 3 $OUT/d64.log $OUT/d128.log
