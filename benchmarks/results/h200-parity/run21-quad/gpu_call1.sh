#!/usr/bin/env bash
# run21 call 1: the "quad" dropout mapping (sparseflash.philox) on an H200. The GPU tests of
# dropout (tests.txt: test_hopper -k dropout, test_parity's quad and kernel-mask tests) in 8
# shards, then the A/B of the 16-bit mappings in one process per head dim
# (parity.py --variants: none, mma, quad, quad with 7 rounds; 16K, H=16, causal).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
[ -n "${NOTESTS:-}" ] || bash benchmarks/gpu_shards.sh "$(cat benchmarks/results/h200-parity/run21-quad/tests.txt)" \
  8 ${TLIMIT:-220} $OUT/tests > /dev/null 2>&1
for f in $OUT/tests/pytest_shard*.txt; do echo "== $f"; tail -n 3 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -60 >> $OUT/tests.txt
rm -rf $OUT/tests
cat $OUT/tests.txt
for d in ${DIMS:-128 64}; do
  timeout ${VLIMIT:-170} python benchmarks/parity.py --variants --head-dim $d --workers 4 \
    --only 'dropout 16-bit mma$,dropout 16-bit quad' --out $OUT/variants_d$d 2>&1 \
    | grep -v Warning | tail -n 40
done
