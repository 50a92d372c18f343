#!/usr/bin/env bash
# run27 call 5: Nsight Compute on the Hopper forward, dense causal d=128 at 4K (B=4) and 16K
# (B=1): the same 2048 query tiles, 4x the steps at 16K; where a tile's fixed cost goes
# (causal_probe.py's fit: 6.6 us a tile and SM against FA4's 3.2):
#   OUT=DIR bash benchmarks/results/h200-hopper/run27-three-softcap/gpu_call5.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
ncu --version > "$OUT/ncu_version.txt" 2>&1
for n in 4096 16384; do
  timeout 200 ncu --kernel-name regex:"_hopper_fwd" --launch-skip 2 --launch-count 1 --set full \
      --import-source no -o "$OUT/fwd$n" -f python benchmarks/results/h200-hopper/run27-three-softcap/fwd_once.py $n \
      > "$OUT/ncu$n.log" 2>&1
  ncu -i "$OUT/fwd$n.ncu-rep" --page details --print-units base > "$OUT/fwd$n.details.txt" 2>&1
  ncu -i "$OUT/fwd$n.ncu-rep" --page source --csv --print-source sass > "$OUT/fwd$n.source.csv" 2>&1 || true
  python benchmarks/ncu_hot_sass.py "$OUT/fwd$n.source.csv" "$OUT/fwd$n.hot.txt" --min 0.3 || true
  rm -f "$OUT/fwd$n.ncu-rep" "$OUT/fwd$n.source.csv"
  grep -E "Duration|Elapsed Cycles|SM Busy|Issue Slots Busy|Executed Ipc A|Registers Per|Achieved Occupancy" "$OUT/fwd$n.details.txt" | head -12
  head -40 "$OUT/fwd$n.hot.txt"
done
