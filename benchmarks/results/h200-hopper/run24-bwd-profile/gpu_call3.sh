#!/usr/bin/env bash
# run24 call 3: the dK/dV kernel's consumer registers. Calls 1-2 (Nsight Compute) found the
# worker consumer warpgroup (CONSUMER_REGS, 232 on non-causal layouts) spilling 14 loads and
# 4 stores a step, the default-partition warpgroup (which Gluon gives what is left, 248) none.
# Forward+backward with launch._HOPPER_BWD_REGS at 240 and 248 against the default,
# interleaved, no peers:
#   OUT=DIR bash benchmarks/results/h200-hopper/run24-bwd-profile/gpu_call3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
timeout ${PLIMIT:-420} python benchmarks/hopper.py --no-peers \
  --cases "dense N=16384 d=128;dense causal N=16384 d=128;dense N=4096 d=128;dense causal N=4096 d=128;dense N=4096 d=64;local(2) N=16384;local(8) N=16384 d=128;butterfly;strided(16);bigbird(3,2,3) N=16384 d=128;local(8) N=16384 d=64" \
  --set "_HOPPER_BWD_REGS={'plain': 240, 'causal': 240}" --set "_HOPPER_BWD_REGS={'plain': 248, 'causal': 248}" \
  --out $OUT/ab > $OUT/ab.log 2>&1
echo "rc=$?" >> $OUT/ab.log
tail -n 3 $OUT/ab.log
