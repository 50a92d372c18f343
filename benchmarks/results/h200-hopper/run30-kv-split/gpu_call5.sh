#!/usr/bin/env bash
# Stop 47, call 5: the kernel tests with run30's forward as the default (12 shards) and, at the
# same time, compute-sanitizer on run30's forward (gpu_next_sanitize.sh's five runs):
#   OUT=DIR bash benchmarks/results/h200-hopper/run30-kv-split/gpu_call5.sh
cd "$(dirname "$0")/../../../.."
here=benchmarks/results/h200-hopper/run30-kv-split
mkdir -p $OUT
git log -1 --format=%h > $OUT/tree.txt 2>/dev/null
OUT=$OUT/sanitize SLIMIT=${SLIMIT:-105} bash $here/gpu_next_sanitize.sh > $OUT/sanitize.log 2>&1 &
OUT=$OUT/tests TLIMIT=${TLIMIT:-420} SHARDS=12 bash $here/gpu_next_tests.sh > $OUT/tests.log 2>&1
wait
cat $OUT/sanitize/summary.txt
tail -n 25 $OUT/tests/tests_summary.txt
