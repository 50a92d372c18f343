#!/usr/bin/env bash
# run27 call 2 (on the FA4 host prefix): causal tiles launched longest first by L2 section
# (launch.LAUNCH_LPT). The peers on the cases whose order changed (dense causal at both
# head dims, bigbird's dK/dV columns): ours, ours with the natural order (--set LAUNCH_LPT=False), FA4 and cuDNN in one process:
#   OUT=DIR bash benchmarks/results/h200-hopper/run27-three-softcap/gpu_call2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -c 'import flash_attn, importlib.metadata as m; print("flash-attn-4", m.version("flash-attn-4"))' >> $OUT/gpu.txt 2>&1
timeout ${PLIMIT:-330} python benchmarks/hopper.py --skip portable --heat 4 \
  --cases "dense causal;bigbird(3,2,3)" --set LAUNCH_LPT=False --out $OUT/peers > $OUT/peers.log 2>&1
echo "rc=$?" >> $OUT/peers.log
grep '"impl"' $OUT/peers.log | python -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(f"{r[\"case\"][:42]:42s} {r[\"impl\"]:22s} {r[\"pass\"]:8s} {r[\"ms\"]:9.4f}")
'
tail -n 1 $OUT/peers.log
