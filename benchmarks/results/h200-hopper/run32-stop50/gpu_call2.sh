#!/usr/bin/env bash
# Stop 50, second call (after FA4's second stash prefix). With APPLY=1 the Q/slot release barrier
# (run31's q-release-barrier.patch) is applied first. The Hopper kernel files on 12 shards and,
# beside them, stop 48's four files (distributed, dynamic layouts, real batches, compile values)
# on 4 shards, each shard under TLIMIT seconds.
#   APPLY=1 OUT=DIR bash benchmarks/results/h200-hopper/run32-stop50/gpu_call2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
if [ "${APPLY:-0}" = 1 ]; then
  git apply benchmarks/results/h200-hopper/run31-stop49/q-release-barrier.patch || { echo "patch failed"; exit 1; }
fi
git diff --stat > $OUT/tree.txt
bash benchmarks/gpu_shards.sh "tests/test_hopper.py tests/test_parity.py" 12 ${TLIMIT:-450} $OUT/hk > /dev/null 2>&1 &
bash benchmarks/gpu_shards.sh "tests/test_distributed.py tests/test_dynamic_layouts.py tests/test_real_batches.py tests/test_compile_values.py" \
  4 ${TLIMIT:-450} $OUT/rb > /dev/null 2>&1 &
wait
for part in hk rb; do
  {
    grep -h -E " in [0-9.]+s" $OUT/$part/pytest_shard*.txt
    grep -h -E "^FAILED|^ERROR|^E  " $OUT/$part/pytest_shard*.txt | head -40
    for f in $OUT/$part/pytest_shard*.txt; do
      grep -q -E " in [0-9.]+s" $f || { echo "unfinished: $f"; tail -c 300 $f; echo; }
    done
  } > $OUT/tests_$part.txt
  echo "== $part"; cut -c1-300 $OUT/tests_$part.txt
done
tar czf $OUT/shards.tgz -C $OUT hk rb && rm -rf $OUT/hk $OUT/rb
