#!/usr/bin/env bash
# run21 call 3: the new defaults (16-bit "quad" draws, 7 Philox rounds): the GPU dropout tests
# again (their default cases now draw quad/7), then the parity suite (dropout, softcap, ALiBi
# against none and FA2's dropout, one run; parity.py --out).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
[ -n "${NOTESTS:-}" ] || bash benchmarks/gpu_shards.sh "$(cat benchmarks/results/h200-parity/run21-quad/tests.txt)" \
  8 ${TLIMIT:-200} $OUT/tests > /dev/null 2>&1
for f in $OUT/tests/pytest_shard*.txt; do echo "== $f"; tail -n 3 $f; done > $OUT/tests.txt 2>/dev/null
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt 2>/dev/null | head -60 >> $OUT/tests.txt
rm -rf $OUT/tests
cat $OUT/tests.txt
timeout ${PLIMIT:-330} python benchmarks/parity.py --out $OUT/parity > $OUT/parity.log 2>&1
grep -E "overhead" $OUT/parity.log | cut -c1-220 | head -30; tail -1 $OUT/parity.log | cut -c1-200
