#!/usr/bin/env bash
# run27 call 4 (on the FA4 host prefix): causal_probe.py (a step's and a tile's cost, ours and
# FA4, dense causal d=128; variants of ours on dense causal 4K), then the GPU tests whose form
# changed when the three-consumer softcap switch was removed (they force HOPPER_FWD_CONSUMERS=3):
#   OUT=DIR bash benchmarks/results/h200-hopper/run27-three-softcap/gpu_call4.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
timeout ${PLIMIT:-360} python benchmarks/results/h200-hopper/run27-three-softcap/causal_probe.py \
  --out $OUT/probe > $OUT/probe.log 2>&1
echo "rc=$?" >> $OUT/probe.log
grep -v Warning $OUT/probe.log | grep -v "exe_args" | grep -E '^\{"impl|^rc' | cut -c1-200
python - $OUT/probe/rows.json <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    if r["pass"] in ("fwd", "fwd+bwd"):
        print(f'{r["case"]:28s} {r["impl"]:28s} {r["pass"]:8s} {r["ms"]:9.4f}')
PY
timeout ${TLIMIT:-200} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
  -k "three_consumers_equal_two or softcap-folded-causal-d64-three-consumers" > $OUT/tests.txt 2>&1
tail -n 3 $OUT/tests.txt
