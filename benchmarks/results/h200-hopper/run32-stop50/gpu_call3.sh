#!/usr/bin/env bash
# Stop 50, third call (on FA4's install prefix): benchmarks/hopper.py, all 20 cases, ours beside
# FA4 and cuDNN (APPLY=1: with the Q/slot release barrier applied, as it will ship), then the
# parity suite (dropout, softcap, ALiBi overheads).
#   APPLY=1 OUT=DIR bash benchmarks/results/h200-hopper/run32-stop50/gpu_call3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
if [ "${APPLY:-0}" = 1 ]; then
  git apply benchmarks/results/h200-hopper/run31-stop49/q-release-barrier.patch || { echo "patch failed"; exit 1; }
fi
git diff --stat > $OUT/tree.txt
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -c 'import flash_attn, importlib.metadata as m; print("flash-attn-4", m.version("flash-attn-4"))' >> $OUT/gpu.txt 2>&1
timeout ${PLIMIT:-400} python benchmarks/hopper.py --skip portable --heat 3 --out $OUT/peers > $OUT/peers.log 2>&1
echo "rc=$?" >> $OUT/peers.log
tail -n 4 $OUT/peers.log | cut -c1-3000
if [ -z "${NOPARITY:-}" ]; then
  timeout ${QLIMIT:-140} python benchmarks/parity.py --out $OUT/parity > $OUT/parity.log 2>&1
  echo "rc=$?" >> $OUT/parity.log
  tail -n 25 $OUT/parity.log
fi
tar czf $OUT/results.tgz -C $OUT peers $( [ -d $OUT/parity ] && echo parity ) && rm -rf $OUT/peers $OUT/parity
