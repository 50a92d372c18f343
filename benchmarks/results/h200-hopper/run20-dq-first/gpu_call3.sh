#!/usr/bin/env bash
# run20 call 3: the persistent Hopper dK/dV kernel (launch.HOPPER_BWD_PERSISTENT). First the GPU
# oracle tests of the Hopper backward (fused_tests.txt) with at most 2 CTAs, so that every CTA
# walks many key tiles; then the A/B without peers (ours at the default, one CTA per key tile,
# against ours persistent, one CTA per SM, at the default registers and at 248 a consumer
# thread), one process per part: dense, then sparse.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
SPARSEFLASH_HOPPER_BWD_PERSISTENT=2 bash benchmarks/gpu_shards.sh \
  "$(cat benchmarks/results/h200-hopper/run20-dq-first/fused_tests.txt)" 4 ${TLIMIT:-150} $OUT/tests \
  > /dev/null 2>&1
for f in $OUT/tests/pytest_shard*.txt; do echo "== $f"; tail -n 3 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR" $OUT/tests/pytest_shard*.txt >> $OUT/tests.txt
grep -h -B2 -A30 "^E  " $OUT/tests/pytest_shard*.txt | head -80 >> $OUT/tests.txt
rm -rf $OUT/tests
cat $OUT/tests.txt | head -30
for part in dense sparse; do
  timeout ${LIMIT:-170} python benchmarks/hopper.py --only $part --no-peers \
    --set "HOPPER_BWD_PERSISTENT=True" \
    --set "HOPPER_BWD_PERSISTENT=True;_HOPPER_BWD_REGS={'plain': 248, 'causal': 248}" \
    --out $OUT/$part 2>&1 | tail -2
done
rm -f $OUT/*/hopper.png
