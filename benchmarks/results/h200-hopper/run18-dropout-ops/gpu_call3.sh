#!/usr/bin/env bash
# run18 call 3: the other test files that run kernels on the GPU (real batches, dynamic
# layouts, compile values, nn modules) in 8 shards, then the dropout forms at d=64.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
bash benchmarks/gpu_shards.sh "tests/test_real_batches.py tests/test_dynamic_layouts.py tests/test_compile_values.py tests/test_nn.py" 8 300 $OUT/shards
timeout 150 python benchmarks/parity.py --variants --only "dropout 16-bit mma" --head-dim 64 --out $OUT/d64 > $OUT/d64.log 2>&1
grep -E "overhead" $OUT/d64.log | cut -c1-200 | head -12; tail -1 $OUT/d64.log | cut -c1-200
rm -f $OUT/*/*.png
cd $OUT && tar czf shards.tgz shards && rm -rf shards
