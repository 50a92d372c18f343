#!/usr/bin/env bash
# run28 call 1 (on the FA4 host prefix): lpt_probe.py, the dense causal forward with tiles
# handed out longest first at run time, beside FA4 and cuDNN:
#   OUT=DIR bash benchmarks/results/h200-hopper/run28-lpt-dynamic/gpu_call1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -c 'import flash_attn, importlib.metadata as m; print("flash-attn-4", m.version("flash-attn-4"))' >> $OUT/gpu.txt 2>&1
timeout ${PLIMIT:-420} python benchmarks/results/h200-hopper/run28-lpt-dynamic/lpt_probe.py \
  --out $OUT/probe > $OUT/probe.log 2>&1
echo "rc=$?" >> $OUT/probe.log
cp $OUT/probe/summary.txt $OUT/summary.txt 2>/dev/null
grep -v Warning $OUT/probe.log | grep -E '^case|^dense|^rc|Error|error' | cut -c1-200
