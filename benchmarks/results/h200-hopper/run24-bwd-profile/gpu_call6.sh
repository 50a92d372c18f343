#!/usr/bin/env bash
# run24 call 6: ours (the final tree: 240 registers, rows read late at d=128) against FA4 and
# cuDNN on the d=128 cases, interleaved (run on the FA4 host prefix of ../shared/fa4):
#   OUT=DIR bash benchmarks/results/h200-hopper/run24-bwd-profile/gpu_call6.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
timeout ${PLIMIT:-290} python benchmarks/hopper.py --skip portable --heat 4 \
  --cases "dense N=16384 d=128;dense causal N=16384 d=128;dense N=4096 d=128;dense causal N=4096 d=128;local(8) N=16384 d=128;butterfly;strided(16);bigbird(3,2,3) N=16384 d=128" \
  --out $OUT/peers > $OUT/peers.log 2>&1
echo "rc=$?" >> $OUT/peers.log
tail -n 2 $OUT/peers.log | cut -c1-300
