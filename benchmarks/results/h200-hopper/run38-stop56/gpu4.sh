#!/usr/bin/env bash
# run38 call 4 (stop 56): the peers run, FlashAttention-4 installed by the calls before (the
# prefix of ../shared/fa4/fetch.sh's second command puts FA4 on PYTHONPATH): benchmarks/hopper.py's
# 20 cases, FA4, cuDNN and ours, interleaved in one process. (Staged with the row-tree variants
# beside ours; run without them once calls 2 and 3 had timed them slower.)
#   OUT=DIR bash benchmarks/results/h200-hopper/run38-stop56/gpu4.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/r4 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $R/gpu.txt
python -c "import flash_attn.cute, torch, triton; print('fa4 ok', torch.__version__, triton.__version__)" 2>&1 | tail -1 | tee -a $R/gpu.txt
(timeout 440 python benchmarks/hopper.py --skip portable --rounds 3 --heat 1 --out $R/peers > $R/peers.log 2>&1
 echo "hopper.py rc=$?" | tee -a $R/gpu.txt)
tail -4 $R/peers.log
