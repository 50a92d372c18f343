#!/usr/bin/env bash
# run23 call 6: the issue's high-density end (34-43% at 16K: bigbird(16,8,16), strided(4)|local(8),
# local(28) at d=64) beside the dense 16K cases they are compared with (sparse efficiency), ours,
# FA4 and cuDNN, interleaved; after the FA4 stash call and with the FA4 prefix:
#   OUT=DIR bash benchmarks/results/h200-hopper/run23-interleaved/gpu_dense_sparse.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee $OUT/gpu.txt
timeout ${PLIMIT:-540} python benchmarks/hopper.py --skip portable \
  --cases "dense N=16384;bigbird(16;strided(4);local(28)" --out $OUT/dense_sparse > $OUT/dense_sparse.log 2>&1
echo "rc=$?" >> $OUT/dense_sparse.log
tail -n 2 $OUT/dense_sparse.log
