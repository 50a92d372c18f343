#!/usr/bin/env bash
# For the next session (not run yet): the kernel test files on the GPU with run30's forward
# pipeline as the default (SPARSEFLASH_HOPPER_FWD_PIPELINE=run30), 16 shards:
#   OUT=DIR bash benchmarks/results/h200-hopper/run30-kv-split/gpu_next_tests.sh
# (call 4 ran test_hopper.py and test_parity.py with the settings hard-wired as defaults and
# returned nothing: the device stopped answering.)
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
export SPARSEFLASH_HOPPER_FWD_PIPELINE=run30
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
bash benchmarks/gpu_shards.sh "${TESTS:-tests/test_hopper.py tests/test_parity.py}" ${SHARDS:-16} ${TLIMIT:-400} $OUT/tests > $OUT/tests.txt 2>&1
grep -h -E " in [0-9.]+s" $OUT/tests/pytest_shard*.txt > $OUT/tests_summary.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -40 >> $OUT/tests_summary.txt
for f in $OUT/tests/pytest_shard*.txt; do grep -q -E " in [0-9.]+s" $f || { echo "unfinished: $f"; tail -c 300 $f; }; done | tee -a $OUT/tests_summary.txt
cat $OUT/tests_summary.txt
