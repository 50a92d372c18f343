#!/usr/bin/env bash
# run23 call 1: the Hopper forward's fixed softcap shift (launch.HOPPER_SOFTCAP_SHIFT). The GPU
# tests of the softcap (test_hopper.py: the fixed shift's oracle tests at caps 1-62, the
# softcap/ALiBi oracle tests, the rescale tests; test_parity.py's softcap tests) in 4 shards,
# then the variants (one process each, 16K, H=16, causal, bf16): softcap 30 with the fixed
# shift and with the running max, softcap 50, at d=128 and d=64.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
mkdir -p $OUT/tests
python -m pytest -q -p no:cacheprovider --collect-only tests/test_hopper.py tests/test_parity.py \
  -k "(softcap or shift or rescale) and (match or against or rows_whose)" 2>/dev/null | grep "::" > /tmp/sel.txt
for ((i = 0; i < 4; i++)); do
  awk -v i=$i 'NR % 4 == i' /tmp/sel.txt > /tmp/shard$i.txt
  timeout ${TLIMIT:-200} python -m pytest -q -p no:cacheprovider $(cat /tmp/shard$i.txt) \
    > $OUT/tests/pytest_$i.txt 2>&1 &
done
wait
for f in $OUT/tests/pytest_*.txt; do echo "== $f"; tail -n 1 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_*.txt | head -60 >> $OUT/tests.txt
cat $OUT/tests.txt
show() { grep -E "$1" $2 | python -c "
import sys, json
for l in sys.stdin:
    d = json.loads(l); print(d['case'][:26], '|', d['impl'][:34].ljust(34), d['pass'].ljust(17), d['ms'], d['note'][:90])"; }
for d in 128 64; do
  timeout ${VLIMIT:-150} python benchmarks/parity.py --variants --only "softcap=30 folded;softcap=50" \
    --head-dim $d --out $OUT/variants_d$d > $OUT/variants_d$d.txt 2>&1
  show '"pass": "(overhead|kernel|check)' $OUT/variants_d$d.txt
done
grep -E '"impl": "error"|Traceback' $OUT/variants_*.txt | cut -c1-300
