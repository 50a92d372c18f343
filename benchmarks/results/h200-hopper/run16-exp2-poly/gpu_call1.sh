#!/usr/bin/env bash
# run16 call 1: the forward's exponentials partly by polynomial (launch.HOPPER_EXP2_EMU).
# A/B of 0-3 quarters with softcap 30 and of 1-2 quarters with no option (forward and
# forward+backward, time over the option-free default, one process per head dim), then the
# GPU oracle tests of the emulation.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
timeout 200 python benchmarks/parity.py --variants --only softcap,exp2 --out $OUT/d128 > $OUT/d128.log 2>&1
grep -E "overhead|check" $OUT/d128.log | head -40; tail -2 $OUT/d128.log
timeout 160 python benchmarks/parity.py --variants --only softcap,exp2 --head-dim 64 --out $OUT/d64 > $OUT/d64.log 2>&1
grep -E "overhead|check" $OUT/d64.log | head -40; tail -2 $OUT/d64.log
timeout 220 bash benchmarks/gpu_shards.sh "tests/test_hopper.py -k polynomial_or_key_padding_or_softcap_and_alibi" 6 210 $OUT/shards
