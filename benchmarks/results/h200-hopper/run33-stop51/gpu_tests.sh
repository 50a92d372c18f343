#!/usr/bin/env bash
# Stop 51: the Hopper and parity GPU test files alone on SHARDS shards (stop 50 ran them beside
# other files on all 16 cores and no shard finished). With APPLY=1 run32's
# publish-warp-barrier.patch is applied first. FILES overrides the selection.
#   APPLY=1 OUT=DIR bash benchmarks/results/h200-hopper/run33-stop51/gpu_tests.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
if [ "${APPLY:-0}" = 1 ]; then
  git apply benchmarks/results/h200-hopper/run32-stop50/publish-warp-barrier.patch || { echo "patch failed"; exit 1; }
fi
git diff --stat > $OUT/tree.txt
bash benchmarks/gpu_shards.sh "${FILES:-tests/test_hopper.py tests/test_parity.py}" ${SHARDS:-12} ${TLIMIT:-480} $OUT/hk > /dev/null 2>&1
{
  grep -h -E " in [0-9.]+s" $OUT/hk/pytest_shard*.txt
  grep -h -E "^FAILED|^ERROR|^EARLY FAILED|^E  " $OUT/hk/pytest_shard*.txt | head -40
  for f in $OUT/hk/pytest_shard*.txt; do
    grep -q -E " in [0-9.]+s" $f || { echo "unfinished: $f"; tail -c 300 $f; echo; }
  done
} > $OUT/tests_hk.txt
cut -c1-300 $OUT/tests_hk.txt
tar czf $OUT/shards.tgz -C $OUT hk && rm -rf $OUT/hk
