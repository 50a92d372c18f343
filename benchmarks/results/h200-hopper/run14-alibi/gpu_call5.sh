#!/usr/bin/env bash
# run14 call 5 (the same warm machine): a second sample of the dQ tile sweep.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 200 python benchmarks/results/h200-hopper/run14-alibi/dq_sweep.py > $OUT/dq_sweep2.jsonl 2>&1
cut -c1-150 $OUT/dq_sweep2.jsonl
