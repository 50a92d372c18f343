#!/usr/bin/env bash
# run27 call 6: the GPU tests of every test file that runs kernels, but tests/test_hopper.py
# (run on the GPU whole in run26 call 6 and in part in calls 1, 3 and 4 here), 16 shards:
#   OUT=DIR bash benchmarks/results/h200-hopper/run27-three-softcap/gpu_call6.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
files="tests/test_attention.py tests/test_compile_values.py tests/test_distributed.py tests/test_dynamic_layouts.py
tests/test_fa4_export.py tests/test_parity.py tests/test_real_batches.py tests/test_nn.py
tests/test_transformers_integration.py tests/test_defects.py tests/test_flex_export.py"
bash benchmarks/gpu_shards.sh "$files" 16 ${TLIMIT:-420} $OUT/shards > $OUT/tests.txt 2>&1
grep -h -E " in [0-9.]+s" $OUT/shards/pytest_shard*.txt > $OUT/summary.txt
cat $OUT/summary.txt
python - "$OUT/summary.txt" <<'PY'
import re, sys
tot = {}
for line in open(sys.argv[1]):
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", line):
        tot[what] = tot.get(what, 0) + int(n)
print("total:", tot)
PY
grep -h -E "^FAILED|^ERROR" $OUT/shards/pytest_shard*.txt | head -30
grep -h -E "^E  " $OUT/shards/pytest_shard*.txt | head -30
for f in $OUT/shards/pytest_shard*.txt; do grep -q -E " in [0-9.]+s" $f || { echo "unfinished: $f"; tail -c 300 $f; }; done
