#!/usr/bin/env bash
# run13 call 3 (after the FA4 prefix of ../shared/fa4, which puts FA4 on PYTHONPATH): issue
# 10's peers (FA4, cuDNN) in one run per part with the final defaults (three consumers at d=64
# on the dense tables, HOPPER_FWD_OVERLAP at d=128); the dense part also times
# ours-HOPPER_FWD_CONSUMERS=2 (the forward before), a third A/B sample.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 260 python benchmarks/hopper.py --only dense --skip portable --set HOPPER_FWD_CONSUMERS=2 --out $OUT/dense 2>&1 | tail -1
timeout 200 python benchmarks/hopper.py --only sparse --skip portable --out $OUT/sparse 2>&1 | tail -1
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv
