#!/usr/bin/env bash
# Stop 55, call 2: ring slots released by every consumer thread (launch.HOPPER_RELEASE_ALL).
# Ordered by what decides first: its GPU bit-identity test; benchmarks/hopper.py's 20 cases with
# ours timed with and without it (ours-HOPPER_RELEASE_ALL=True, same run, interleaved; peers
# skipped: this is an A/B); parity.py's variants with and without it (16K, H=16, d=128, causal,
# bf16: none, dropout p=0.1, softcap 30); the portable kernels' GPU tests (run34's
# portable-direct-launch.patch, now applied); oracle tests with it on. Everything lands in
# $OUT/run.tgz (the device tool returns at most 8 files).
#   OUT=DIR bash benchmarks/results/h200-hopper/run37-stop55/gpu2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run37c2 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
timeout ${TLIMIT:-110} python -m pytest -q -x tests/test_hopper.py -k "release_by_every_thread_is_bit_identical" 2>&1 | tail -4 | tee $R/tests_bit.txt
timeout ${HLIMIT:-220} python benchmarks/hopper.py --skip portable,cudnn --rounds 3 --heat 1 \
  --set HOPPER_RELEASE_ALL=True --out $R/ab > $R/ab.log 2>&1
python -m benchmarks.ab_table $R/ab/hopper.json 2>&1 | tee $R/ab_table.txt | cut -c1-160
timeout ${PLIMIT:-150} python benchmarks/parity.py --variants --head-dim 128 \
  --only 'none, release all$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, release all$;softcap=30 folded$;softcap=30 folded, release all$' \
  --out $R/variants 2>&1 | grep -E '"pass": "overhead' | cut -c1-180 | tee $R/variants.txt
SPARSEFLASH_HOPPER=0 SPARSEFLASH_HOPPER_BWD=0 timeout ${ALIMIT:-60} python -m pytest -q -x tests/test_attention.py \
  2>&1 | tail -3 | tee $R/tests_portable.txt
SPARSEFLASH_HOPPER_RELEASE_ALL=1 timeout ${OLIMIT:-40} python -m pytest -q tests/test_hopper.py \
  -k "hopper_forward_matches_the_oracle or three_consumer_forward_matches or dkdv_stores_match" \
  2>&1 | tail -3 | tee $R/tests_oracle_release.txt
