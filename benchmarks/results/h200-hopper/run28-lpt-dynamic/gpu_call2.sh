#!/usr/bin/env bash
# run28 call 2: timeline_probe.py (a Hopper forward tile's phases from cycle stamps), on the
# tree with timeline.patch applied:
#   OUT=DIR bash benchmarks/results/h200-hopper/run28-lpt-dynamic/gpu_call2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
timeout ${PLIMIT:-400} python benchmarks/results/h200-hopper/run28-lpt-dynamic/timeline_probe.py \
  --out $OUT/timeline > $OUT/timeline.log 2>&1
echo "rc=$?" >> $OUT/timeline.log
cp $OUT/timeline/summary.txt $OUT/summary.txt 2>/dev/null
grep -v Warning $OUT/timeline.log | tail -n 40 | cut -c1-400
