#!/bin/bash
# run25 call 5: Nsight Compute on the d=64 dK/dV kernel with 128-query steps (the default since
# run25), dense 4K d=64 as run24 call 2 profiled the 64-query form; the hot-SASS table by
# benchmarks/ncu_hot_sass.py from the source page.
#   OUT=DIR bash benchmarks/results/h200-hopper/run25-d64-steps/gpu_call5.sh
set -u
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
ncu --version > "$OUT/ncu_version.txt" 2>&1
c="dense N=4096 d=64"
tag=$(echo "$c" | tr ' =' '__')
timeout 250 ncu --kernel-name regex:"_hopper_dkdv" --launch-skip 1 --launch-count 1 --set full \
    --import-source no -o "$OUT/$tag" -f python benchmarks/ncu_bwd_peers.py --cases "$c" --no-fa4 \
    > "$OUT/$tag.log" 2>&1
ncu -i "$OUT/$tag.ncu-rep" --page details --print-units base > "$OUT/$tag.details.txt" 2>&1
ncu -i "$OUT/$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/$tag.source.csv" 2>&1 || true
python benchmarks/ncu_hot_sass.py "$OUT/$tag.source.csv" "$OUT/$tag.hot_sass.txt" > "$OUT/hot.log" 2>&1 || true
rm -f "$OUT"/*.ncu-rep "$OUT"/*.source.csv
grep -E "Duration|Issue Slots Busy|Executed Ipc|Registers Per|Local" "$OUT/$tag.details.txt" | head -12
sort -t= -k3 -rn "$OUT/$tag.hot_sass.txt" 2>/dev/null | head -3; awk '{for(i=1;i<=NF;i++) if ($i=="s=") {v=$(i+1); sub("%","",v); print v, $0}}' "$OUT/$tag.hot_sass.txt" | sort -rn | head -25 | cut -c1-150
