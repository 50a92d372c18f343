#!/usr/bin/env bash
# run26 call 6: tests/test_hopper.py whole on the GPU at the session's final kernels, 16 shards
# (call 5's whole suite did not finish in its shards' 500 s):
#   OUT=DIR bash benchmarks/results/h200-hopper/run26-kv-regs/gpu_call6.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
bash benchmarks/gpu_shards.sh tests/test_hopper.py 16 ${TLIMIT:-330} $OUT/hopper > $OUT/hopper.txt 2>&1
grep -h -E " in [0-9.]+s" $OUT/hopper/pytest_shard*.txt > $OUT/summary.txt
cat $OUT/summary.txt
python - "$OUT/summary.txt" <<'PY'
import re, sys
tot = {}
for line in open(sys.argv[1]):
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", line):
        tot[what] = tot.get(what, 0) + int(n)
print("total:", tot)
PY
grep -h -E "^FAILED|^ERROR" $OUT/hopper/pytest_shard*.txt | head -30
grep -h -E "^E  " $OUT/hopper/pytest_shard*.txt | head -30
