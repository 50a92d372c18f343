#!/usr/bin/env bash
# run22 call 1: the Hopper forward's descending walk (launch.HOPPER_FWD_DESCENDING). Two test
# selections at once, each in 5 shards: A (testsA.txt) the forward oracle tests with the default
# walk, the descending walk forced on every oracle layout, and the softcap/ALiBi and rescale
# tests (the causal ALiBi now descends by default); B (testsB.txt) the dropout and persistent
# tests with SPARSEFLASH_HOPPER_DESCENDING=1 (every two-consumer forward descends).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
R=benchmarks/results/h200-parity/run22-descending
mkdir -p $OUT/tests
for sel in A B; do
  for ((i = 0; i < 5; i++)); do
    awk -v i=$i 'NR % 5 == i' $R/call1_tests$sel.txt > /tmp/shard$sel$i.txt
    if [ $sel = B ]; then env_=SPARSEFLASH_HOPPER_DESCENDING=1; else env_=SPARSEFLASH_UNUSED=1; fi
    env $env_ timeout ${TLIMIT:-240} python -m pytest -q -p no:cacheprovider $(cat /tmp/shard$sel$i.txt) \
      > $OUT/tests/pytest_$sel$i.txt 2>&1 &
  done
done
wait
for f in $OUT/tests/pytest_*.txt; do echo "== $f"; tail -n 1 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_*.txt | head -60 >> $OUT/tests.txt
cat $OUT/tests.txt
# the variants (one process, d=128, 16K, H=16, causal): ALiBi ascending / descending / zero
# slopes, and no modifier descending, each against no modifier
timeout ${VLIMIT:-200} python benchmarks/parity.py --variants --only "alibi;none, descending\$" \
  --out $OUT/variants > $OUT/variants.txt 2>&1
grep -E "overhead|NOT|Error|error" $OUT/variants.txt | cut -c1-260 | head -40
