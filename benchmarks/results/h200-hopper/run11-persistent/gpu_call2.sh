#!/usr/bin/env bash
# run11 call 2 (after the FA4 prefix of ../shared/fa4, which puts FA4 on PYTHONPATH): the
# whole GPU suite in 6 shards (persistent forward by default on short even rows; the
# one-CTA-per-tile form without the tile loop), then issue 10's peers (FA4, cuDNN) in one run
# per part, with the persistent forward forced on as an extra impl.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
bash benchmarks/gpu_shards.sh tests/test_hopper.py 6 250 $OUT
timeout 170 python benchmarks/hopper.py --only dense --skip portable --out $OUT/dense 2>&1 | tail -1
timeout 170 python benchmarks/hopper.py --only sparse --skip portable --persistent --out $OUT/sparse 2>&1 | tail -1
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv
