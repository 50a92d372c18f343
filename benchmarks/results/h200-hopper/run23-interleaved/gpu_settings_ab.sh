#!/usr/bin/env bash
# run23 call 9: the forward's dispatch settings A/B'd again with interleaved timing (before
# run23 every `--set` variant was timed after ours, which the clock drift favoured): persistent
# with run-time tiles, one CTA per tile, and no conditional rescale, against the default, on
# the d=128 cases where the default is furthest from FA4 (no peers):
#   OUT=DIR bash benchmarks/results/h200-hopper/run23-interleaved/gpu_settings_ab.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee $OUT/gpu.txt
timeout ${PLIMIT:-480} python benchmarks/hopper.py --no-peers \
  --cases "dense causal N=4096 d=128;dense N=4096 d=128;dense N=16384 d=128;local(2) N=16384;local(8) N=16384 d=128;butterfly;strided(16);bigbird(3,2,3) N=16384 d=128" \
  --set "HOPPER_PERSISTENT=True;HOPPER_DYNAMIC_TILES=True" --set HOPPER_PERSISTENT=False \
  --set HOPPER_FWD_RESCALE=0 --out $OUT/ab > $OUT/ab.log 2>&1
echo "rc=$?" >> $OUT/ab.log
tail -n 2 $OUT/ab.log
