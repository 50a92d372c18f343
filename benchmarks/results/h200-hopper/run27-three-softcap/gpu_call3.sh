#!/usr/bin/env bash
# run27 call 3: causal tiles launched longest first by L2 section
# (launch.LAUNCH_LPT): the GPU tests of the order and of causal layouts (tests/test_hopper.py,
# tests/test_attention.py), 12 shards:
#   OUT=DIR bash benchmarks/results/h200-hopper/run27-three-softcap/gpu_call3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT/tests
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -m pytest -q -p no:cacheprovider --collect-only tests/test_hopper.py tests/test_attention.py \
  -k "longest_first or launch_order or causal" 2>/dev/null | grep "::" > $OUT/tests/selected.txt
wc -l < $OUT/tests/selected.txt
bash benchmarks/gpu_shards.sh @$OUT/tests/selected.txt 12 ${TLIMIT:-200} $OUT/tests/shards > $OUT/tests.txt 2>&1
grep -h -E " in [0-9.]+s" $OUT/tests/shards/pytest_shard*.txt > $OUT/tests_summary.txt
cat $OUT/tests_summary.txt
grep -h -E "^FAILED|^ERROR" $OUT/tests/shards/pytest_shard*.txt | head -20
grep -h -E "^E  " $OUT/tests/shards/pytest_shard*.txt | head -20
