#!/usr/bin/env bash
# run18 call 2 (the final tree, dropout form 3 by default): the GPU suites of the Hopper
# kernels, the parity options and the attention API in 8 shards (paths only: every test of
# the three files), then the dropout forms at d=64 (parity.py --variants --head-dim 64).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
bash benchmarks/gpu_shards.sh "tests/test_hopper.py tests/test_parity.py tests/test_attention.py" 8 390 $OUT/shards
timeout 150 python benchmarks/parity.py --variants --only "dropout 16-bit mma" --head-dim 64 --out $OUT/d64 > $OUT/d64.log 2>&1
grep -E "overhead" $OUT/d64.log | cut -c1-200 | head -12; tail -1 $OUT/d64.log | cut -c1-200
rm -f $OUT/*/*.png
cd $OUT && tar czf shards.tgz shards && rm -rf shards
