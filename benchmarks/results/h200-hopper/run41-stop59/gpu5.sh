#!/usr/bin/env bash
# run41 calls 9-10 (WHICH=bwd, the default) and 13 (WHICH=fwd): Nsight Compute on our kernels
# against FlashAttention-4's, dense 16K d=128 non-causal, from the forward+backward that
# ncu_bwd_peers.py runs, and the hot SASS lines of each: the backward kernels (ours the fused
# dK/dV kernel; run24's profile was of the kernels before run24-run40) or the forward kernels
# (forward 0.954x FA4 in call 5). FA4 must be installed first (docs/hopper.md).
#   OUT=DIR [WHICH=fwd] bash benchmarks/results/h200-hopper/run41-stop59/gpu5.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
case "${WHICH:-bwd}" in
  bwd) R=/tmp/run41-ncu; tag=dense16k_d128; kernels="dkdv bwd_sm90" ;;
  fwd) R=/tmp/run41-ncuf; tag=fwd_dense16k_d128; kernels="hopper_fwd ForwardSm90" ;;
  *) echo "WHICH must be bwd or fwd, got '$WHICH'" >&2; exit 2 ;;
esac
rm -rf $R && mkdir -p $R $OUT
trap 'rm -f $R/*.ncu-rep; tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
ncu --version | tail -1 | tee -a $R/gpu.txt
c="dense N=16384 d=128"
# 2 reps x 2 impls, interleaved: skip the first rep's two kernels of each name (compiles)
timeout ${NLIMIT:-300} ncu --kernel-name regex:"${kernels/ /|}" --launch-skip 2 --launch-count 2 --set full \
    --import-source no -o "$R/$tag" -f python benchmarks/ncu_bwd_peers.py --cases "$c" > "$R/$tag.log" 2>&1
echo "ncu rc=$?" | tee -a $R/$tag.log
ncu -i "$R/$tag.ncu-rep" --page details --print-units base > "$R/$tag.details.txt" 2>&1
for k in $kernels; do
  ncu -i "$R/$tag.ncu-rep" --kernel-name regex:$k --page source --csv --print-source sass > "$R/$k.source.csv" 2>&1
  python benchmarks/ncu_hot_sass.py "$R/$k.source.csv" "$R/$k.hot.txt" --min 0.3 > /dev/null 2>&1 && gzip -f "$R/$k.source.csv"
done
grep -E "^  [a-zA-Z_]+.*\(|Duration|Executed Instructions |Registers Per|Issue Slots Busy|Compute \(SM\) Throughput" "$R/$tag.details.txt" | head -30
