#!/usr/bin/env bash
# run22 call 2: the walks (launch.HOPPER_FWD_WALK; call 1 measured "descending" only, as
# DESCENDING). Tests at once, 5 shards each: A (testsA.txt) every oracle layout with the
# "descending" and "last-first" walks forced, and the softcap/ALiBi and rescale tests (the
# causal ALiBi walks "last-first" by default); B (testsB.txt) the dropout and persistent tests
# with SPARSEFLASH_HOPPER_WALK=last-first (every two-consumer forward). Then the variants
# (d=128, 16K, H=16, causal) and the parity suite on the new default.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
R=benchmarks/results/h200-parity/run22-descending
mkdir -p $OUT/tests
for sel in A B; do
  for ((i = 0; i < 5; i++)); do
    awk -v i=$i 'NR % 5 == i' $R/tests$sel.txt > /tmp/shard$sel$i.txt
    if [ $sel = B ]; then env_=SPARSEFLASH_HOPPER_WALK=last-first; else env_=SPARSEFLASH_UNUSED=1; fi
    env $env_ timeout ${TLIMIT:-200} python -m pytest -q -p no:cacheprovider $(cat /tmp/shard$sel$i.txt) \
      > $OUT/tests/pytest_$sel$i.txt 2>&1 &
  done
done
wait
for f in $OUT/tests/pytest_*.txt; do echo "== $f"; tail -n 1 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_*.txt | head -60 >> $OUT/tests.txt
cat $OUT/tests.txt
rm -rf $OUT/tests
timeout ${VLIMIT:-170} python benchmarks/parity.py --variants --only "alibi column;none, walk" \
  --out $OUT/variants > $OUT/variants.txt 2>&1
grep -E '"pass": "(fwd|fwd\+bwd)"' $OUT/variants.txt | python -c "
import sys, json
for l in sys.stdin:
    d = json.loads(l); print(d['case'][:26], '|', d['impl'][:30].ljust(30), d['pass'].ljust(8), d['ms'])"
timeout ${PLIMIT:-200} python benchmarks/parity.py --out $OUT/parity > $OUT/parity.txt 2>&1
grep -E "overhead" $OUT/parity.txt | python -c "
import sys, json
for l in sys.stdin:
    d = json.loads(l); print(d['case'][:26], '|', d['impl'][:30].ljust(30), d['pass'].ljust(17), d['ms'])"
