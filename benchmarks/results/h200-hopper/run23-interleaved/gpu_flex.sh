#!/usr/bin/env bash
# run23 call 4: ours against FlexAttention's compiled Triton kernel on the same blocks, the
# quick cases (3 dense, 2 sparse), timed interleaved (benchmarks/timing.py):
#   OUT=DIR bash benchmarks/results/h200-hopper/run23-interleaved/gpu_flex.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee $OUT/gpu_flex.txt
timeout ${PLIMIT:-540} python benchmarks/hopper.py --quick --no-peers --flex --out $OUT/flex > $OUT/flex.log 2>&1
echo "rc=$?" >> $OUT/flex.log
tail -n 2 $OUT/flex.log
