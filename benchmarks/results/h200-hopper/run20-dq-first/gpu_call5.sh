#!/usr/bin/env bash
# run20 call 5 (after the FA4 stash call, with the FA4 prefix): the GPU tests of the fused
# backward with the new dQ conversion kernel (fused_tests.txt and the conversion's own test,
# bitwise against torch on the GPU), then the peers run (ours, FA4, cuDNN), dense then sparse,
# each part in one process.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
bash benchmarks/gpu_shards.sh "$(cat benchmarks/results/h200-hopper/run20-dq-first/fused_tests.txt) \
  tests/test_hopper.py::test_fused_dq_conversion_kernel" 4 ${TLIMIT:-100} $OUT/tests > /dev/null 2>&1
for f in $OUT/tests/pytest_shard*.txt; do echo "== $f"; tail -n 3 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR" $OUT/tests/pytest_shard*.txt >> $OUT/tests.txt
rm -rf $OUT/tests
cat $OUT/tests.txt
timeout 150 python benchmarks/hopper.py --only dense --skip portable --out $OUT/dense 2>&1 | tail -1
timeout 110 python benchmarks/hopper.py --only sparse --skip portable --out $OUT/sparse 2>&1 | tail -1
rm -f $OUT/*/hopper.png
