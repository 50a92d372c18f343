#!/usr/bin/env bash
# Staged for the next stop (no device time was left in stop 56): the fused dK/dV kernel's
# meetings by named barriers (launch.HOPPER_BWD_MEET, kernels/hopper.py _named_barrier), in the
# order that decides first. Its GPU bit-identity test (15 cases); benchmarks/hopper.py's 20 cases
# with ours timed with MEET=1, 2 and 3 beside the default (interleaved, same run; peers skipped:
# an A/B); parity.py's variants with and without it (16K causal d=128: none, dropout, softcap).
# Then the row sums' oracle test (HOPPER_FWD_ROW_TREE bit 2), which stop 56's limits cut.
# Everything lands in $OUT/run.tgz (the device tool returns at most 8 files).
#   OUT=DIR bash benchmarks/results/h200-hopper/run38-stop56/next.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run39 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
timeout ${TLIMIT:-150} python -m pytest -q -x -p no:cacheprovider tests/test_hopper.py \
  -k "meetings_by_named_barriers_are_bit_identical" 2>&1 | tail -4 | tee $R/tests_meet.txt
timeout ${HLIMIT:-300} python benchmarks/hopper.py --skip portable,cudnn --rounds 3 --heat 1 \
  --set HOPPER_BWD_MEET=1 --set HOPPER_BWD_MEET=2 --set HOPPER_BWD_MEET=3 --out $R/ab > $R/ab.log 2>&1
python -m benchmarks.ab_table $R/ab/hopper.json 2>&1 | tee $R/ab_table.txt | cut -c1-170
timeout ${PLIMIT:-150} python benchmarks/parity.py --variants --head-dim 128 \
  --only 'none, named-barrier meetings$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, named-barrier meetings$;softcap=30 folded$;softcap=30 folded, named-barrier meetings$' \
  --out $R/variants 2>&1 | grep -E '"pass": "overhead' | cut -c1-180 | tee $R/variants.txt
timeout ${OLIMIT:-120} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
  -k "row_sums_by_halves_match_the_oracle" 2>&1 | tail -3 | tee $R/tests_row_sums.txt
