#!/usr/bin/env bash
# run29 call 4: the output copies with issue 11's options (opts_probe.py):
#   OUT=DIR bash benchmarks/results/h200-hopper/run29-own-out/gpu_call4.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
timeout ${PLIMIT:-420} python benchmarks/results/h200-hopper/run29-own-out/opts_probe.py --out $OUT/probe > $OUT/probe.log 2>&1
echo "rc=$?" >> $OUT/probe.log
cp $OUT/probe/summary.txt $OUT/summary.txt 2>/dev/null
cat $OUT/summary.txt; tail -n 3 $OUT/probe.log
