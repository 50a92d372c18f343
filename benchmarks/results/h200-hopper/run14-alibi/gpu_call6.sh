#!/usr/bin/env bash
# run14 call 6: the Gluon dK/dV kernel's (Q, dO) ring depth (bwd_stages_sweep.py).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 200 python benchmarks/results/h200-hopper/run14-alibi/bwd_stages_sweep.py > $OUT/bwd_stages.jsonl 2>&1
cut -c1-160 $OUT/bwd_stages.jsonl
