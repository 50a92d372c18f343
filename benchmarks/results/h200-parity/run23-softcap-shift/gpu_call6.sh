#!/usr/bin/env bash
# run23 call 6: the portable forward's fixed shift (launch.SOFTCAP_SHIFT, kernels/fwd.py FIXED),
# what GPUs other than Hopper run: test_parity.py's softcap tests on the GPU (its fixed-shift
# test at d=32 runs the portable kernels there), then the variants with the portable kernels
# throughout, without option and with softcap 30 (fixed shift / running max), d=128 and d=64.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
mkdir -p $OUT/tests
timeout ${TLIMIT:-120} python -m pytest -q -p no:cacheprovider tests/test_parity.py -k "softcap or fixed_shift" \
  > $OUT/tests/pytest_parity.txt 2>&1 &
show() { grep -E "$1" $2 | python -c "
import sys, json
for l in sys.stdin:
    d = json.loads(l); print(d['case'][:26], '|', d['impl'][:42].ljust(42), d['pass'].ljust(17), d['ms'], d['note'][:90])"; }
for d in 128 64; do
  timeout ${VLIMIT:-150} python benchmarks/parity.py --variants --only "none, portable;softcap=30 folded, portable" \
    --head-dim $d --out $OUT/variants_d$d > $OUT/variants_d$d.txt 2>&1
  show '"pass": "(kernel|check|fwd|fwd\+bwd)"' $OUT/variants_d$d.txt
done
wait
tail -n 3 $OUT/tests/pytest_parity.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_parity.txt | head -20
grep -E '"impl": "error"|Traceback' $OUT/variants_*.txt | cut -c1-300
