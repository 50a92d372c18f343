#!/usr/bin/env bash
# For the next session (not run yet), on the FA4 host prefix: benchmarks/hopper.py with run30's
# forward pipeline (ours) against the run29 default (the --set impl), FA4 and cuDNN, all 20
# cases, then the parity suite with each pipeline:
#   OUT=DIR bash benchmarks/results/h200-hopper/run30-kv-split/gpu_next_peers.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -c 'import flash_attn, importlib.metadata as m; print("flash-attn-4", m.version("flash-attn-4"))' >> $OUT/gpu.txt 2>&1
SPARSEFLASH_HOPPER_FWD_PIPELINE=run30 timeout ${PLIMIT:-400} python benchmarks/hopper.py --skip portable --heat 3 \
  --set "HOPPER_FWD_PIPELINE='run29'" --out $OUT/peers > $OUT/peers.log 2>&1
echo "rc=$?" >> $OUT/peers.log
if [ -z "${NOPARITY:-}" ]; then
  for p in run29 run30; do
    SPARSEFLASH_HOPPER_FWD_PIPELINE=$p timeout ${QLIMIT:-150} python benchmarks/parity.py --out $OUT/parity-$p \
      > $OUT/parity-$p.log 2>&1
    echo "rc=$?" >> $OUT/parity-$p.log
  done
fi
tail -n 30 $OUT/peers.log
