#!/usr/bin/env bash
# run23 call 3: with the fixed shift nothing but the tanh and the exponential lies between S
# and P, so part of the exponentials by an FMA-unit polynomial (run16's, which lost with the
# running max) is tried again: the fixed-shift oracle tests with 1/4 and 2/4 of them so
# computed (SPARSEFLASH_HOPPER_SOFTCAP_EXP2_EMU), then the d=128 variants (16K, H=16, causal).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
mkdir -p $OUT/tests
for emu in 1 2; do
  SPARSEFLASH_HOPPER_SOFTCAP_EXP2_EMU=$emu timeout ${TLIMIT:-150} python -m pytest -q -p no:cacheprovider \
    tests/test_hopper.py -k "fixed_shift_matches" > $OUT/tests/pytest_emu$emu.txt 2>&1 &
done
wait
for f in $OUT/tests/pytest_*.txt; do echo "== $f"; tail -n 1 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_*.txt | head -40 >> $OUT/tests.txt
cat $OUT/tests.txt
show() { grep -E "$1" $2 | python -c "
import sys, json
for l in sys.stdin:
    d = json.loads(l); print(d['case'][:26], '|', d['impl'][:36].ljust(36), d['pass'].ljust(17), d['ms'], d['note'][:90])"; }
timeout ${VLIMIT:-200} python benchmarks/parity.py --variants --only "softcap=30 folded" \
  --out $OUT/variants_d128 > $OUT/variants_d128.txt 2>&1
show '"pass": "(overhead|check|fwd|fwd\+bwd)"' $OUT/variants_d128.txt
grep -E '"impl": "error"|Traceback' $OUT/variants_d128.txt | cut -c1-300
