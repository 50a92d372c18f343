#!/usr/bin/env bash
# run41 call 13: Nsight Compute on the forward kernels, ours against FlashAttention-4's, dense 16K d=128
# (forward 0.954x FA4 in call 5), from the forward+backward that ncu_bwd_peers.py runs. FA4 must
# be installed first (docs/hopper.md).
#   OUT=DIR bash benchmarks/results/h200-hopper/run41-stop59/gpu13.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run41-ncuf && rm -rf $R && mkdir -p $R $OUT
trap 'rm -f $R/*.ncu-rep; tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
ncu --version | tail -1 | tee -a $R/gpu.txt
c="dense N=16384 d=128"; tag=fwd_dense16k_d128
# 2 reps x 2 impls, interleaved: skip the first rep's two forward kernels (compiles)
timeout ${NLIMIT:-300} ncu --kernel-name regex:"hopper_fwd|ForwardSm90" --launch-skip 2 --launch-count 2 --set full \
    --import-source no -o "$R/$tag" -f python benchmarks/ncu_bwd_peers.py --cases "$c" > "$R/$tag.log" 2>&1
echo "ncu rc=$?" | tee -a $R/$tag.log
ncu -i "$R/$tag.ncu-rep" --page details --print-units base > "$R/$tag.details.txt" 2>&1
for k in hopper_fwd ForwardSm90; do
  ncu -i "$R/$tag.ncu-rep" --kernel-name regex:$k --page source --csv --print-source sass > "$R/$k.source.csv" 2>&1
  python benchmarks/ncu_hot_sass.py "$R/$k.source.csv" "$R/$k.hot.txt" --min 0.3 > /dev/null 2>&1 && gzip -f "$R/$k.source.csv"
done
grep -E "^  [a-zA-Z_]+.*\(|Duration|Executed Instructions |Registers Per|Issue Slots Busy|Compute \(SM\) Throughput" "$R/$tag.details.txt" | head -30
