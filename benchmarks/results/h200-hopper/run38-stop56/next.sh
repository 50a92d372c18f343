#!/usr/bin/env bash
# Staged for the next stop (no device time was left in stop 56): the fused dK/dV kernel's
# meetings by named barriers (launch.HOPPER_BWD_MEET) and the forward's ping-pong by named
# barriers (launch.HOPPER_FWD_PINGPONG), both kernels/hopper.py _named_barrier. Two parts, one
# device call each, in the order that decides first:
#   PART=1: their GPU bit-identity tests, then parity.py's variants with and without each
#           (16K causal d=128: none, dropout p=0.1, softcap 30), then the row sums' oracle test
#           (HOPPER_FWD_ROW_TREE bit 2) that stop 56's limits cut;
#   PART=2: benchmarks/hopper.py's 20 cases with ours timed with MEET=3 and with the ping-pong
#           beside the default (interleaved, same run; peers skipped: an A/B).
# Everything lands in $OUT/run.tgz (the device tool returns at most 8 files).
#   OUT=DIR PART=1 bash benchmarks/results/h200-hopper/run38-stop56/next.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run39-${PART:-1} && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
if [ "${PART:-1}" = 1 ]; then
  timeout ${TLIMIT:-100} python -m pytest -q -x -p no:cacheprovider tests/test_hopper.py \
    -k "forward_pingpong_is_bit_identical" 2>&1 | tail -4 | tee $R/tests_pingpong.txt
  timeout ${TLIMIT:-150} python -m pytest -q -x -p no:cacheprovider tests/test_hopper.py \
    -k "meetings_by_named_barriers_are_bit_identical" 2>&1 | tail -4 | tee $R/tests_meet.txt
  timeout ${PLIMIT:-200} python benchmarks/parity.py --variants --head-dim 128 \
    --only 'none, named-barrier meetings$;none, ping-pong$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, named-barrier meetings$;dropout 16-bit quad, 7 rounds, ping-pong$;softcap=30 folded$;softcap=30 folded, named-barrier meetings$;softcap=30 folded, ping-pong$' \
    --out $R/variants 2>&1 | grep -E '"pass": "overhead' | cut -c1-180 | tee $R/variants.txt
  timeout ${OLIMIT:-100} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
    -k "row_sums_by_halves_match_the_oracle" 2>&1 | tail -3 | tee $R/tests_row_sums.txt
else
  timeout ${HLIMIT:-520} python benchmarks/hopper.py --skip portable,cudnn --rounds 3 --heat 1 \
    --set HOPPER_BWD_MEET=3 --set HOPPER_FWD_PINGPONG=True --out $R/ab > $R/ab.log 2>&1
  python -m benchmarks.ab_table $R/ab/hopper.json 2>&1 | tee $R/ab_table.txt | cut -c1-170
fi
