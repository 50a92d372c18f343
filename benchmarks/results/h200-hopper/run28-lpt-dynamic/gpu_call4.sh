#!/usr/bin/env bash
# run28 call 4 (and 6): tests/test_hopper.py whole on the GPU with the output copies
# (launch.HOPPER_FWD_OUT_TMA; call 6 also HOPPER_BWD_OUT_TMA) in the tree, 16 shards:
#   OUT=DIR bash benchmarks/results/h200-hopper/run28-lpt-dynamic/gpu_call4.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
bash benchmarks/gpu_shards.sh tests/test_hopper.py 16 ${TLIMIT:-450} $OUT/hopper > $OUT/hopper.txt 2>&1
grep -h -E " in [0-9.]+s" $OUT/hopper/pytest_shard*.txt > $OUT/summary.txt
python - "$OUT/summary.txt" <<'PY' | tee -a $OUT/summary.txt
import re, sys
tot = {}
for line in open(sys.argv[1]):
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", line):
        tot[what] = tot.get(what, 0) + int(n)
print("total:", tot)
PY
grep -h -E "^FAILED|^ERROR" $OUT/hopper/pytest_shard*.txt | head -30 | tee -a $OUT/summary.txt
grep -h -E "^E  " $OUT/hopper/pytest_shard*.txt | head -30
for f in $OUT/hopper/pytest_shard*.txt; do grep -q -E " in [0-9.]+s" $f || { echo "unfinished: $f"; tail -c 300 $f; }; done | tee -a $OUT/summary.txt
