#!/usr/bin/env bash
# run14 call 2: where a dense forward+backward step's GPU time goes (profile_step.py), and the
# dQ kernel's tile config (dq_sweep.py).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
R=benchmarks/results/h200-hopper/run14-alibi
# where a dense forward+backward step's GPU time goes, kernel by kernel
timeout 120 python $R/profile_step.py > $OUT/profile.txt 2>&1; grep -E "^===|Self CUDA time total" $OUT/profile.txt
# the dQ kernel's tile config (the portable kernel alone reads it now)
timeout 330 python $R/dq_sweep.py > $OUT/dq_sweep.jsonl 2>&1; cat $OUT/dq_sweep.jsonl | cut -c1-200
