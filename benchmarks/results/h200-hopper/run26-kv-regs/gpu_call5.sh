#!/usr/bin/env bash
# run26 call 5: the whole test suite on the GPU (every file of tests/, compiled kernels: the
# Hopper paths where they apply) at the session's final kernels, in 16 shards:
#   OUT=DIR bash benchmarks/results/h200-hopper/run26-kv-regs/gpu_call5.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
bash benchmarks/gpu_shards.sh tests 16 ${TLIMIT:-500} $OUT/suite > $OUT/suite.txt 2>&1
grep -h -E "passed|failed|error" $OUT/suite/pytest_shard*.txt | grep -E "^[0-9]+ |in [0-9.]+s" > $OUT/summary.txt
cat $OUT/summary.txt
python - "$OUT/summary.txt" <<'PY'
import re, sys
tot = {}
for line in open(sys.argv[1]):
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|xfailed|xpassed)", line):
        tot[what] = tot.get(what, 0) + int(n)
print("total:", tot)
PY
grep -h -E "^FAILED|^ERROR" $OUT/suite/pytest_shard*.txt | head -30
grep -h -E "^E  " $OUT/suite/pytest_shard*.txt | head -30
