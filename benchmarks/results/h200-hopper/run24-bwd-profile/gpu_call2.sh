#!/bin/bash
# run24 call 2: call 1 profiled FA4's backward (and its postprocess) but not ours: the
# filter "Backward" matched FA4's pre- and postprocess kernels too. Ours alone here.
# Usage (repository root): OUT=DIR bash benchmarks/results/h200-hopper/run24-bwd-profile/gpu_call2.sh
set -u
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
ncu --version > "$OUT/ncu_version.txt" 2>&1
for c in "dense N=16384 d=128" "dense N=4096 d=64"; do
  tag=$(echo "$c" | tr ' =' '__')
  # skip the first call (it compiles)
  timeout 250 ncu --kernel-name regex:"_hopper_dkdv" --launch-skip 1 --launch-count 1 --set full \
      --import-source no -o "$OUT/$tag" -f python benchmarks/ncu_bwd_peers.py --cases "$c" --no-fa4 \
      > "$OUT/$tag.log" 2>&1
  ncu -i "$OUT/$tag.ncu-rep" --page details --print-units base > "$OUT/$tag.details.txt" 2>&1
  ncu -i "$OUT/$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/$tag.source.csv" 2>&1 || true
  ls -la "$OUT" >> "$OUT/$tag.log"
done
# the reports themselves are large: keep the text
rm -f "$OUT"/*.ncu-rep
