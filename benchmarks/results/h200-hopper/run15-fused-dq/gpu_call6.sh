#!/usr/bin/env bash
# run15 call 6: per-kernel A/B of the fused dQ on the short columns of local(2) (call 5 had
# this case's forward+backward at 1.100 ms against run14's 0.918), then the parity options'
# overheads (issue 11) with this tree's defaults.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 100 python benchmarks/bwd_breakdown.py --fused --iters 10 --cases "local(2),bigbird(3,2,3)" --out $OUT/breakdown > $OUT/breakdown.log 2>&1
grep -E "TOTAL|hopper_dkdv|bwd_dq|elementwise|Fill|Error" $OUT/breakdown.log | head -40
timeout 300 python benchmarks/parity.py --out $OUT/parity > $OUT/parity.log 2>&1
grep -E "overhead" $OUT/parity.log | head -30; tail -3 $OUT/parity.log
