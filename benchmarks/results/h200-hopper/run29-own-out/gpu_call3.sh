#!/usr/bin/env bash
# run29 call 3: issue 11's parity suite at the current kernels (run28's output copies), then the
# GPU tests of the other kernel test files (parity, attention, real batches, dynamic layouts):
#   OUT=DIR bash benchmarks/results/h200-hopper/run29-own-out/gpu_call3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
timeout ${PLIMIT:-300} python benchmarks/parity.py --out $OUT/parity > $OUT/parity.log 2>&1
echo "rc=$?" >> $OUT/parity.log
grep -E '"(overhead|kernel)"|overhead' $OUT/parity.log | tail -n 30
if [ -z "${NOTESTS:-}" ]; then
  bash benchmarks/gpu_shards.sh "tests/test_parity.py tests/test_attention.py tests/test_real_batches.py tests/test_dynamic_layouts.py" \
    16 ${TLIMIT:-230} $OUT/tests > $OUT/tests.txt 2>&1
  grep -h -E " in [0-9.]+s" $OUT/tests/pytest_shard*.txt > $OUT/tests_summary.txt
  python - "$OUT/tests_summary.txt" <<'PY' | tee -a $OUT/tests_summary.txt
import re, sys
tot = {}
for line in open(sys.argv[1]):
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", line):
        tot[what] = tot.get(what, 0) + int(n)
print("total:", tot)
PY
  grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -40 >> $OUT/tests_summary.txt
  for f in $OUT/tests/pytest_shard*.txt; do grep -q -E " in [0-9.]+s" $f || { echo "unfinished: $f"; tail -c 300 $f; }; done | tee -a $OUT/tests_summary.txt
  cat $OUT/tests_summary.txt
fi
