#!/usr/bin/env bash
# Staged for the next stop.
# PART=1: the dense forward's L2 cache throughput (call 13: 1.75x FlashAttention-4's L2 throughput on the
#   same products): Nsight Compute on our forward alone, dense 16K d=128 non-causal, with the
#   persistent CTAs (the default) and with one CTA per query tile (HOPPER_PERSISTENT=False), to
#   tell the tile order from the copies' shape. No FA4 needed.
# PART=dense / PART=sparse: the peers with FlexAttention, as calls 5 and 6 ran them, meant for an
#   H200 (benchmarks/results/h200/fa4_ratio.json still holds stop 50's kernels); install FA4 first
#   (docs/hopper.md; with the whole of .fa4b/ the device tool refused the tree as over 64 MiB in
#   call 13: split its part over two calls).
#   OUT=DIR PART=1 bash benchmarks/results/h200-hopper/run41-stop59/next.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run42-${PART:-1} && rm -rf $R && mkdir -p $R $OUT
trap 'rm -f $R/*.ncu-rep; tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
case "${PART:-1}" in
  1) for form in persistent one-cta; do
       extra=(); [ $form = one-cta ] && extra=(--set HOPPER_PERSISTENT=False)
       timeout ${NLIMIT:-150} ncu --kernel-name regex:hopper_fwd --launch-count 1 --set full \
         --import-source no -o $R/$form -f python benchmarks/ncu_fwd.py --d 128 "${extra[@]}" > $R/$form.log 2>&1
       # (ncu_fwd.py runs one forward a head dim: its one launch is profiled; Triton compiles
       # on the host before it)
       ncu -i $R/$form.ncu-rep --page details --print-units base > $R/$form.details.txt 2>&1
       echo "== $form"; grep -E "Duration|L2 Cache Throughput|L1/TEX Hit Rate|Compute \(SM\) Throughput" $R/$form.details.txt
     done ;;
  dense|sparse)
     timeout ${HLIMIT:-540} python benchmarks/hopper.py --skip portable --flex --only $PART --rounds 3 --heat 1 \
       --out $R/peers > $R/peers.log 2>&1
     echo "rc=$?"; tail -1 $R/peers.log | cut -c1-300 ;;
esac
