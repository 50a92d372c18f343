#!/usr/bin/env bash
# run41 calls 3 and 4: hopper.py beside FA4, cuDNN and FlexAttention's compiled Triton kernel
# (--flex; not re-timed against ours since run23), the dense cases (PART=dense, call 3) or the
# block-sparse ones (PART=sparse, call 4). FA4 must be installed first (docs/hopper.md).
#   OUT=DIR PART=dense bash benchmarks/results/h200-hopper/run41-stop59/gpu3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run41-$PART && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a $R/gpu.txt
timeout ${HLIMIT:-540} python benchmarks/hopper.py --skip portable --flex --only $PART --rounds 3 --heat 1 \
  --out $R/peers > $R/peers.log 2>&1
echo "rc=$?" | tee -a $R/peers.log
grep -c '"impl": "flex"' $R/peers.log; tail -1 $R/peers.log | cut -c1-300
