#!/usr/bin/env bash
# Stop 54, call 1: the dropout drawer warpgroup (launch.HOPPER_DROPOUT_DRAWER). A first check
# (sanity.py), then parity.py's variants at d=128 (16K, H=16, causal, bf16, p=0.1): 16-bit quad
# draws, 7 rounds, with and without the drawer; then the GPU tests of the drawer.
#   OUT=DIR bash benchmarks/results/h200-hopper/run36-stop54/gpu1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
timeout 150 python benchmarks/results/h200-hopper/run36-stop54/sanity.py 2>&1 | tail -8 | tee $OUT/sanity.txt
timeout ${PLIMIT:-200} python benchmarks/parity.py --variants --head-dim ${DIM:-128} \
  --only 'dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, drawer$' \
  --out $OUT/variants 2>&1 | grep -E '"pass": "(overhead|fwd|fwd\+bwd)|check' | cut -c1-260
timeout ${TLIMIT:-180} python -m pytest -q -x tests/test_hopper.py -k "drawer_is_bit_identical" 2>&1 | tail -15 | tee $OUT/tests.txt
