#!/usr/bin/env bash
# run15 call 2: the fused dQ with one 64-column product per warpgroup (split in registers into
# the two 32-column staging tiles), 3 and 2 ring stages, against the unfused backward.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 150 python benchmarks/results/h200-hopper/run15-fused-dq/fused_check.py 2>&1 | tee $OUT/fused_check.log | grep "rel err"
timeout 300 python benchmarks/bwd_breakdown.py --fused --iters 5 --cases "dense,dense causal,local(8),dense d=64" --out $OUT/breakdown > $OUT/breakdown.log 2>&1
grep -E "TOTAL|hopper_dkdv|bwd_dq|Error" $OUT/breakdown.log | head -60
