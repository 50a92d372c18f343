#!/usr/bin/env bash
# run14 call 3 (after the FA4 prefix of ../shared/fa4, which puts FA4 on PYTHONPATH): the dense
# peers run with this stop's defaults (three consumers at d=64 now persistent with run-time
# tiles, not re-measured against FA4 since run13 call 3).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 270 python benchmarks/hopper.py --only dense --skip portable --out $OUT/dense 2>&1 | tail -1
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv
# The sparse part ran as the next call on the same warm machine (FA4 still installed):
#   export PYTHONPATH=/tmp/fa4-site:/tmp/fa4-site/nvidia_cutlass_dsl/dsl_packages:.:$PYTHONPATH
#   timeout 250 python benchmarks/hopper.py --only sparse --skip portable --out $OUT/sparse
