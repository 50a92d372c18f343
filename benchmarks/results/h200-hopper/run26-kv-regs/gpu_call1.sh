#!/usr/bin/env bash
# run26 call 1: the d=64 peers run with the dK/dV kernel's defaults of this tree (128-query
# steps, dQ split by rows, K and V as register A operands: launch.HOPPER_BWD_KV_REGS), with
# ours-HOPPER_BWD_KV_REGS=False (K and V in shared memory) timed interleaved beside ours, FA4
# and cuDNN; then the GQA A/B (gqa_ab.py). On the FA4 host prefix of ../shared/fa4:
#   OUT=DIR bash benchmarks/results/h200-hopper/run26-kv-regs/gpu_call1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
D64="dense N=16384 d=64;dense causal N=16384 d=64;dense N=4096 d=64;dense causal N=4096 d=64;local(8) N=16384 d=64;bigbird(3,2,3) N=16384 d=64;local(28)"
timeout ${QLIMIT:-330} python benchmarks/hopper.py --skip portable --heat 4 --cases "$D64" \
  --set "HOPPER_BWD_KV_REGS=False" --out $OUT/peers > $OUT/peers.log 2>&1
echo "rc=$?" >> $OUT/peers.log
tail -n 2 $OUT/peers.log | cut -c1-300
timeout ${GLIMIT:-150} python benchmarks/results/h200-hopper/run26-kv-regs/gqa_ab.py $OUT/gqa_ab.json > $OUT/gqa_ab.log 2>&1
echo "rc=$?" >> $OUT/gqa_ab.log
cut -c1-400 $OUT/gqa_ab.log
