#!/usr/bin/env bash
# run23: the issue-10 peers (ours, FA4, cuDNN on the dense cases) timed interleaved after a heat
# phase (benchmarks/timing.py), one process per part:
#   OUT=DIR bash benchmarks/results/h200-hopper/run23-interleaved/gpu_peers.sh dense|sparse
# after the FA4 stash call and with the FA4 prefix (`bash ../shared/fa4/fetch.sh` prints both).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
part=$1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee $OUT/gpu_$part.txt
timeout ${PLIMIT:-540} python benchmarks/hopper.py --only $part --skip portable --out $OUT/$part \
  > $OUT/$part.log 2>&1
echo "rc=$?" >> $OUT/$part.log
tail -n 2 $OUT/$part.log
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee -a $OUT/gpu_$part.txt
