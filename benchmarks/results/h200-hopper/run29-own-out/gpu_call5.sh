#!/usr/bin/env bash
# run29 call 5: issue 11's parity suite with the dK/dV copy off under ALiBi at d=128 (the new
# launch._bwd_out_tma rule), then test_hopper.py's ALiBi tests:
#   OUT=DIR bash benchmarks/results/h200-hopper/run29-own-out/gpu_call5.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
timeout ${PLIMIT:-240} python benchmarks/parity.py --out $OUT/parity > $OUT/parity.log 2>&1
echo "rc=$?" >> $OUT/parity.log
python - $OUT/parity.log <<'PY' | tee $OUT/summary.txt
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        if r["pass"].startswith("overhead") or r["pass"] == "kernel":
            print(f"{r['case'][:26]:26s} {r['impl'][:44]:44s} {r['pass']:16s} {r['ms']} {r.get('note', '')[:60]}")
PY
python -m pytest --collect-only -q tests/test_hopper.py -k alibi 2>/dev/null | grep "::" > $OUT/ids.txt
bash benchmarks/gpu_shards.sh @$OUT/ids.txt 16 ${TLIMIT:-150} $OUT/tests > $OUT/tests.txt 2>&1
grep -h -E " in [0-9.]+s" $OUT/tests/pytest_shard*.txt | tee $OUT/tests_summary.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -20 | tee -a $OUT/tests_summary.txt
