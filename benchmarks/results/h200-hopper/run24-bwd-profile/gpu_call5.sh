#!/usr/bin/env bash
# run24 call 5: the parity options (causal layouts, d=128, 16K) with the dK/dV kernel's step
# rows read late (the default) and early (launch.HOPPER_BWD_ROWS_LATE=False):
#   OUT=DIR bash benchmarks/results/h200-hopper/run24-bwd-profile/gpu_call5.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
timeout ${VLIMIT:-300} python benchmarks/parity.py --variants \
  --only 'none, rows early;softcap=30 folded$;softcap=30 folded, rows early;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, rows early' \
  --out $OUT/variants_d128 > $OUT/variants_d128.txt 2>&1
echo "rc=$?" >> $OUT/variants_d128.txt
tail -n 3 $OUT/variants_d128.txt | cut -c1-300
