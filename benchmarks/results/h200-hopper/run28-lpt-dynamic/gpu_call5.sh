#!/usr/bin/env bash
# run28 call 5 (on the FA4 host prefix): dK and dV through shared memory and bulk
# copies (launch.HOPPER_BWD_OUT_TMA, on in this tree) against the register stores it replaces
# (--set HOPPER_BWD_OUT_TMA=False), beside FA4 and cuDNN, every case of benchmarks/hopper.py:
#   OUT=DIR bash benchmarks/results/h200-hopper/run28-lpt-dynamic/gpu_call5.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -c 'import flash_attn, importlib.metadata as m; print("flash-attn-4", m.version("flash-attn-4"))' >> $OUT/gpu.txt 2>&1
timeout ${PLIMIT:-560} python benchmarks/hopper.py --skip portable --heat ${HEAT:-3} \
  --set HOPPER_BWD_OUT_TMA=False --out $OUT/peers ${CASES:+--cases "$CASES"} > $OUT/peers.log 2>&1
echo "rc=$?" >> $OUT/peers.log
cp $OUT/peers/fa4_ratio.json $OUT/fa4_ratio.json 2>/dev/null
grep '"impl"' $OUT/peers.log > $OUT/rows.jsonl
python benchmarks/results/h200-hopper/run28-lpt-dynamic/ab_summary.py $OUT/rows.jsonl \
  "ours-HOPPER_BWD_OUT_TMA=False" | tee $OUT/summary.txt
tail -n 2 $OUT/peers.log
