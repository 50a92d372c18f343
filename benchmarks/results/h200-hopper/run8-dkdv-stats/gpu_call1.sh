#!/usr/bin/env bash
# run8 call 1: the Hopper dK/dV kernel with lse2/delta copied by the producer warp (TMA).
# GPU tests first, then per-kernel times: TMA statistics against consumer loads, the portable
# dK/dV kernel, and 232 registers on causal layouts; with softcap; with dropout.
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt"
timeout 330 python -m pytest -q -x tests/test_hopper.py 2>&1 | tail -25 > "$OUT/pytest_hopper.txt"
tail -3 "$OUT/pytest_hopper.txt"
timeout 150 python benchmarks/bwd_breakdown.py --stats-ab --regs 232 --out "$OUT/plain" > "$OUT/plain.txt" 2>&1
grep -E "TOTAL|_hopper_dkdv|_bwd_dkdv|rel diff" "$OUT/plain.txt"
timeout 100 python benchmarks/bwd_breakdown.py --stats-ab --softcap 30 --cases "dense causal,local(8),dense d=64" --out "$OUT/softcap" > "$OUT/softcap.txt" 2>&1
grep -E "TOTAL|_hopper_dkdv|_bwd_dkdv|rel diff" "$OUT/softcap.txt"
timeout 100 python benchmarks/bwd_breakdown.py --stats-ab --dropout 0.1 --cases "dense causal,local(8)" --out "$OUT/dropout" > "$OUT/dropout.txt" 2>&1
grep -E "TOTAL|_hopper_dkdv|_bwd_dkdv|rel diff" "$OUT/dropout.txt"
# Ran on tree 8757bd4 plus the A/B switch launch.HOPPER_BWD_STATS_TMA (a STATS_TMA constexpr
# choosing the consumers' global loads of lse2/delta, the kernel before this change) and
# bwd_breakdown.py's --stats-ab option, both removed once the copies won.
