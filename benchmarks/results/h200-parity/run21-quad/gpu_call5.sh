#!/usr/bin/env bash
# run21 call 5: the Hopper dropout tests once more on the final tree (tests5.txt: the oracle
# tests with their mask, quad cases included, and the quad tests; the quad draws' helpers were
# factored after call 3), in 8 shards; then compute-sanitizer on the Hopper kernels with dropout
# in the new default draws (quad mapping, 7 rounds: the forward's lane shuffles are new),
# memcheck and racecheck (benchmarks/sanitize.py --dropout).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
bash benchmarks/gpu_shards.sh "$(cat benchmarks/results/h200-parity/run21-quad/tests5.txt)" \
  8 ${TLIMIT:-150} $OUT/tests > /dev/null 2>&1
for f in $OUT/tests/pytest_shard*.txt; do echo "== $f"; tail -n 2 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -40 >> $OUT/tests.txt
rm -rf $OUT/tests
cat $OUT/tests.txt
timeout 110 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --dropout > $OUT/memcheck_dropout.txt 2>&1
tail -n 4 $OUT/memcheck_dropout.txt
timeout 130 compute-sanitizer --tool racecheck python benchmarks/sanitize.py --dropout > $OUT/racecheck_dropout.txt 2>&1
tail -n 6 $OUT/racecheck_dropout.txt
