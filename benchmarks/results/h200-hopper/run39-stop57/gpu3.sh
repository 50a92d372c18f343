#!/usr/bin/env bash
# run39 call 3 (stop 57): the dK/dV kernel's statistics read late (launch.HOPPER_BWD_STATS_LATE),
# on the tree with the three neutral settings removed. One device call, in the order that
# decides first: its GPU bit-identity test (5 cases), then hopper.py's 8 dense cases with ours
# timed with and without it (interleaved, same process; no peers), then parity.py's variants
# with and without it (16K causal d=128: none, dropout p=0.1, softcap 30). Everything lands in
# $OUT/run.tgz.
#   OUT=DIR bash benchmarks/results/h200-hopper/run39-stop57/gpu3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run39-3 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a $R/gpu.txt
timeout ${TLIMIT:-110} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
  -k "statistics_read_late_are_bit_identical" 2>&1 | tail -4 | tee $R/tests.txt
timeout ${HLIMIT:-170} python benchmarks/hopper.py --no-peers --only dense --rounds 3 --heat 1 \
  --set HOPPER_BWD_STATS_LATE=True --out $R/ab > $R/ab.log 2>&1
python -m benchmarks.ab_table $R/ab/hopper.json 2>&1 | tee $R/ab_table.txt | cut -c1-170
timeout ${PLIMIT:-130} python benchmarks/parity.py --variants --head-dim 128 \
  --only 'none, statistics late$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, statistics late$;softcap=30 folded$;softcap=30 folded, statistics late$' \
  --out $R/variants 2>&1 | grep -E '"pass": "overhead' | cut -c1-180 | tee $R/variants.txt
