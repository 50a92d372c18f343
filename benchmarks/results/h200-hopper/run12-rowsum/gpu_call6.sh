#!/usr/bin/env bash
# run12 call 6 (after the FA4 prefix of ../shared/fa4, which puts FA4 on PYTHONPATH): issue
# 10's peers (FA4, cuDNN) in one run per part with the final defaults (HOPPER_FWD_OVERLAP at
# d=128); the sparse part also times ours-HOPPER_FWD_OVERLAP=False, a second A/B sample.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 230 python benchmarks/hopper.py --only dense --skip portable --out $OUT/dense 2>&1 | tail -1
timeout 200 python benchmarks/hopper.py --only sparse --skip portable --set HOPPER_FWD_OVERLAP=False --out $OUT/sparse 2>&1 | tail -1
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv
