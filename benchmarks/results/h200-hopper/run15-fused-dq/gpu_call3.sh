#!/usr/bin/env bash
# run15 call 3: the GPU suites of the Hopper kernels and the parity options with the fused dQ
# on by default (2 ring slots at d=128), then the backward's kernels with dropout and softcap.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 330 bash benchmarks/gpu_shards.sh "tests/test_hopper.py tests/test_parity.py" 6 320 $OUT/shards
timeout 120 python benchmarks/bwd_breakdown.py --fused --iters 5 --dropout 0.1 --cases "dense causal,local(8)" --out $OUT/dropout > $OUT/dropout.log 2>&1
grep -E "TOTAL|hopper_dkdv|Error" $OUT/dropout.log | head -30
timeout 100 python benchmarks/bwd_breakdown.py --fused --iters 5 --softcap 30 --cases "dense causal,local(8)" --out $OUT/softcap > $OUT/softcap.log 2>&1
grep -E "TOTAL|hopper_dkdv|Error" $OUT/softcap.log | head -30
