#!/usr/bin/env bash
# run18 call 2 (the final tree, dropout form 3 by default): the GPU suites of the Hopper
# kernels, the parity options and the attention API in 8 shards (paths only: every test of
# the three files). Call 3 (gpu_call3.sh) runs the other GPU-using files on the same machine.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
bash benchmarks/gpu_shards.sh "tests/test_hopper.py tests/test_parity.py tests/test_attention.py" 8 420 $OUT/shards
cd $OUT && tar czf shards.tgz shards && rm -rf shards
