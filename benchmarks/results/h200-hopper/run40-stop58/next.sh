#!/usr/bin/env bash
# Staged for the next stop (stop 58 spent its device time on the GPU tests and the split loops).
# PART 1: hopper.py beside FA4 and cuDNN (install ../shared/fa4 first, see docs/hopper.md), meant
# for an H200, whose summary (benchmarks/results/h200/fa4_ratio.json) dates from stop 50's
# kernels; PART 2: parity.py's default suite (dropout, softcap with the split loops, ALiBi, FA2's
# dropout), the numbers the parity issue's closing note quotes. Everything lands in $OUT/run.tgz.
#   OUT=DIR PART=1 bash benchmarks/results/h200-hopper/run40-stop58/next.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run41-${PART:-1} && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a $R/gpu.txt
case "${PART:-1}" in
  1) timeout ${HLIMIT:-560} python benchmarks/hopper.py --skip portable --rounds 3 --heat 1 \
       --out $R/peers > $R/peers.log 2>&1
     tail -2 $R/peers.log | cut -c1-400 ;;
  2) timeout ${PLIMIT:-400} python benchmarks/parity.py --out $R/parity > $R/parity.log 2>&1
     grep -E '"pass": "overhead' $R/parity.log | cut -c1-200 ;;
esac
