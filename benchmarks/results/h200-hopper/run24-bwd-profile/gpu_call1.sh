#!/bin/bash
# run24 call 1: Nsight Compute on the backward kernels, ours (the fused dK/dV kernel) against
# FlashAttention-4's, same tables: dense 16K d=128 and dense 4K d=64 (B=4).
# Usage (repository root, FA4 on PYTHONPATH): OUT=DIR bash benchmarks/results/h200-hopper/run24-bwd-profile/gpu_call1.sh
set -u
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
ncu --version > "$OUT/ncu_version.txt" 2>&1
for c in "dense N=16384 d=128" "dense N=4096 d=64"; do
  tag=$(echo "$c" | tr ' =' '__')
  # 2 reps x 2 impls, interleaved: skip the first rep's two backward kernels (compiles)
  timeout 250 ncu --kernel-name regex:"dkdv|Backward" --launch-skip 2 --launch-count 2 --set full \
      --import-source no -o "$OUT/$tag" -f python benchmarks/ncu_bwd_peers.py --cases "$c" \
      > "$OUT/$tag.log" 2>&1
  ncu -i "$OUT/$tag.ncu-rep" --page details --print-units base > "$OUT/$tag.details.txt" 2>&1
  ncu -i "$OUT/$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/$tag.source.csv" 2>&1 || true
  ls -la "$OUT" >> "$OUT/$tag.log"
done
# the reports themselves are large: keep the text
rm -f "$OUT"/*.ncu-rep
