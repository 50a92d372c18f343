#!/usr/bin/env bash
# run8 call 2: issue 10's peers (FA4, cuDNN) with the dK/dV statistics copied by TMA and the
# Hopper dK/dV kernel on every case (d=64 included). After the FA4 prefix of ../shared/fa4
# (it puts FA4 on PYTHONPATH): OUT=DIR bash gpu_call2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 230 python benchmarks/hopper.py --only dense --skip portable --out $OUT/dense 2>&1 | tail -2
timeout 200 python benchmarks/hopper.py --only sparse --skip portable --out $OUT/sparse 2>&1 | tail -2
