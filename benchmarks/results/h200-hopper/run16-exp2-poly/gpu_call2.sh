#!/usr/bin/env bash
# run16 call 2 (tree after the polynomial's removal): the GPU suites on the kernels of the
# final tree: the Hopper and parity files whole, test_attention.py whole (its GPU cases
# include the cached-launch test whose dQ check changed in run15) and test_distributed.py
# (its split-backward test changed in run15), in 8 parallel processes.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,driver_version --format=csv
python -c "import torch, triton; print(torch.__version__, triton.__version__)"
timeout 560 bash benchmarks/gpu_shards.sh "tests/test_hopper.py tests/test_parity.py tests/test_attention.py tests/test_distributed.py" 8 550 $OUT/shards
cat $OUT/shards/pytest_shard*.txt > $OUT/pytest_all.txt; rm -r $OUT/shards
grep -E "passed|failed" $OUT/pytest_all.txt
