#!/usr/bin/env bash
# run20 call 4 (after the FA4 stash call, with the FA4 prefix): per-kernel GPU time of one
# forward+backward, ours against FA4 on the same tables (benchmarks/peer_breakdown.py).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
timeout ${LIMIT:-200} python benchmarks/peer_breakdown.py --out $OUT/breakdown 2>&1 | grep -v "Warning\|generate_mlir"
