#!/usr/bin/env bash
# run15 call 1: the fused dQ (launch.HOPPER_FUSED_DQ, on by default in this tree) through the
# GPU suites of the Hopper kernels and the parity options, then per-kernel times of the
# backward with and without it.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/gpu.txt
timeout 150 python benchmarks/results/h200-hopper/run15-fused-dq/fused_check.py 2>&1 | tee $OUT/fused_check.log | grep -v Warning | tail -25
grep -q "kv longer" $OUT/fused_check.log || exit 1
timeout 200 python benchmarks/bwd_breakdown.py --fused --iters 5 --out $OUT/breakdown > $OUT/breakdown.log 2>&1
grep -E "TOTAL|grad rel|hopper_dkdv|bwd_dq|Error|error" $OUT/breakdown.log | head -60
# (call 2: timeout 330 bash benchmarks/gpu_shards.sh "tests/test_hopper.py tests/test_parity.py" 6 300 $OUT/shards)
