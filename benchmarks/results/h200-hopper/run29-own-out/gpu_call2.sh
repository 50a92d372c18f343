#!/usr/bin/env bash
# run29 call 2: a second A/B of persistent CTAs with run-time tiles (pd) at d=128 and of the
# d=64 output in buffers of its own (own64), dense only, 5 rounds, no peers:
#   OUT=DIR bash benchmarks/results/h200-hopper/run29-own-out/gpu_call2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
timeout ${PLIMIT:-400} python benchmarks/results/h200-hopper/run29-own-out/out_probe.py --out $OUT/probe \
  --no-sparse --rounds 5 --variants ours,pd,own64 --dense 4096c,8192c,16384c,16384 > $OUT/probe.log 2>&1
echo "rc=$?" >> $OUT/probe.log
cp $OUT/probe/summary.txt $OUT/summary.txt 2>/dev/null
tail -n 40 $OUT/probe.log
