#!/usr/bin/env bash
# run34 (stop 52), call 5 (about 420 s), after the host-time cuts (tree of this commit):
# the cached Hopper launches straight into Triton's C launcher with each TMA map kept by
# address (launch._DirectLaunch), the backward's workspace in one allocation
# (launch._bwd_workspace), the run-time tile counter kept per stream (launch._tile_counter,
# reset by each launch's last increment).
# A. alone: host_bound_probe.py --split (as call 4, to compare);
# B. tests/test_hopper.py whole and tests/test_attention.py's GPU tests, 12 shards.
#   OUT=DIR bash benchmarks/results/h200-hopper/run34-stop52/gpu_call5.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
echo "== A. host split (alone)"
timeout ${HLIMIT:-150} python benchmarks/host_bound_probe.py --split --out $OUT/host 2>&1 | grep -v Warning | grep -E "^[a-z]|step|sparse_att|impl|grad|attention_|launch|tma|torch" | head -140
echo "== B. tests"
bash benchmarks/gpu_shards.sh "tests/test_hopper.py tests/test_attention.py" ${SHARDS:-12} ${TLIMIT:-330} $OUT/tests > $OUT/tests.txt 2>&1
grep -h -E "passed|failed|error" $OUT/tests/pytest_shard*.txt | grep -v "^[0-9.]*s " | cut -c1-300
grep -h -E "^(FAILED|ERROR)" $OUT/tests/pytest_shard*.txt | cut -c1-300 | head -30
