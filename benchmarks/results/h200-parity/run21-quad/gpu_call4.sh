#!/usr/bin/env bash
# run21 call 4 (after the FA4 stash call, with the FA4 prefix): the Hopper tests that run
# dropout in the default quad draws outside `-k dropout` (tests4.txt: three consumers against
# two, the persistent forward against one CTA per tile, packed documents), in 8 shards; then
# the dense peers (hopper.py --only dense --skip portable: ours, FA4, cuDNN, Flex), which had
# not run since the dQ conversion became a Triton kernel (run20).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
bash benchmarks/gpu_shards.sh "$(cat benchmarks/results/h200-parity/run21-quad/tests4.txt)" \
  8 ${TLIMIT:-150} $OUT/tests > /dev/null 2>&1
for f in $OUT/tests/pytest_shard*.txt; do echo "== $f"; tail -n 2 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -40 >> $OUT/tests.txt
rm -rf $OUT/tests
cat $OUT/tests.txt
timeout ${PLIMIT:-300} python benchmarks/hopper.py --only dense --skip portable --out $OUT/dense 2>&1 | tail -3
