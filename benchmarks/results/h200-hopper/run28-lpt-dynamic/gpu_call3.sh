#!/usr/bin/env bash
# run28 call 3 (on the FA4 host prefix): the forward's output through shared memory and a bulk
# copy (launch.HOPPER_FWD_OUT_TMA, the new default) against the register stores it replaces
# (--set HOPPER_FWD_OUT_TMA=False), beside FA4 and cuDNN, every case of benchmarks/hopper.py:
#   OUT=DIR bash benchmarks/results/h200-hopper/run28-lpt-dynamic/gpu_call3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -c 'import flash_attn, importlib.metadata as m; print("flash-attn-4", m.version("flash-attn-4"))' >> $OUT/gpu.txt 2>&1
timeout ${PLIMIT:-560} python benchmarks/hopper.py --skip portable --heat ${HEAT:-3} \
  --set HOPPER_FWD_OUT_TMA=False --out $OUT/peers ${CASES:+--cases "$CASES"} > $OUT/peers.log 2>&1
echo "rc=$?" >> $OUT/peers.log
cp $OUT/peers/fa4_ratio.json $OUT/fa4_ratio.json 2>/dev/null
grep '"impl"' $OUT/peers.log > $OUT/rows.jsonl
python benchmarks/results/h200-hopper/run28-lpt-dynamic/ab_summary.py $OUT/rows.jsonl \
  "ours-HOPPER_FWD_OUT_TMA=False" | tee $OUT/summary.txt
tail -n 2 $OUT/peers.log
