#!/usr/bin/env bash
# run30 call 4: at the new forward defaults (d=128: 2 slots released in two halves; persistent
# CTAs with run-time tiles and two Q buffers everywhere), tests/test_hopper.py whole and
# tests/test_parity.py in 16 shards:
#   OUT=DIR bash benchmarks/results/h200-hopper/run30-kv-split/gpu_call4.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
bash benchmarks/gpu_shards.sh "${TESTS:-tests/test_hopper.py tests/test_parity.py}" 16 ${TLIMIT:-380} $OUT/tests > $OUT/tests.txt 2>&1
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
