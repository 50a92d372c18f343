#!/usr/bin/env bash
# Stop 53, call 1 (about 500 s): A. parity.py's variants, d=128: dropout's draws made early
# (HOPPER_DROPOUT_FORM=7, 16- and 8-bit quad) against the default form 3, and the softcap's
# exponentials a quarter / a half on the FMA pipe (HOPPER_SOFTCAP_EXP2_FMA, stop 52) against
# the default; B. the GPU tests of both: the dropout forms' bit identity (forms 0-3, 6, 7) and
# the softcap fixed shift's oracle tests with the polynomial.
#   OUT=DIR bash benchmarks/results/h200-hopper/run35-stop53/gpu1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
git log --oneline -1 2>/dev/null; git status --short 2>/dev/null | head -5
echo "== A. variants"
timeout ${PLIMIT:-330} python benchmarks/parity.py --variants \
  --only 'dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, early;dropout 8-bit quad, 7 rounds$;dropout 8-bit quad, 7 rounds, early;softcap=30 folded$;softcap=30 folded, exp2;softcap=50 folded$;softcap=50 folded, exp2' \
  --out $OUT/variants 2>&1 | grep -E '"pass": "(overhead|fwd|fwd\+bwd)' | cut -c1-260
echo "== B. tests"
timeout ${TLIMIT:-200} python -m pytest -q -x tests/test_hopper.py -p no:cacheprovider \
  -k "dropout_forms_are_bit_identical or fixed_shift_matches_the_oracle" 2>&1 | tail -15
