#!/usr/bin/env bash
# run40 call 2 (stop 58): the dK/dV kernel's full and masked steps as two loops
# (launch.HOPPER_BWD_SPLIT_LOOPS). One device call: the step loops' SASS by this machine's ptxas
# (sass_counts.py, beside the tests), the GPU tests of tests/test_hopper.py in 8 parallel shards
# (the `test_hopper_` names, the split loops' bit-identity among them), then hopper.py's cases
# with ours timed with and without the split (interleaved, same process; no peers), then
# parity.py's variants with and without it (16K causal d=128: none, dropout p=0.1, softcap 30).
# Everything lands in $OUT/run.tgz.
#   OUT=DIR bash benchmarks/results/h200-hopper/run40-stop58/gpu2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run40-2 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a $R/gpu.txt
timeout 200 python benchmarks/results/h200-hopper/run40-stop58/sass_counts.py > $R/sass_counts.txt 2>&1 &
bash benchmarks/gpu_shards.sh "tests/test_hopper.py -k test_hopper_" 8 ${TLIMIT:-240} $R/tests 2>&1 | tail -30 | tee $R/tests.txt
wait
cat $R/sass_counts.txt | cut -c1-200
timeout ${HLIMIT:-200} python benchmarks/hopper.py --no-peers --rounds 3 --heat 1 \
  --cases 'dense causal;dense N=16384;local(2) N=16384;local(8) N=16384;bigbird(3' \
  --set HOPPER_BWD_SPLIT_LOOPS=True --out $R/ab > $R/ab.log 2>&1
python -m benchmarks.ab_table $R/ab/hopper.json 2>&1 | tee $R/ab_table.txt | cut -c1-170
timeout ${PLIMIT:-130} python benchmarks/parity.py --variants --head-dim 128 \
  --only 'none, split loops$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, split loops$;softcap=30 folded$;softcap=30 folded, split loops$' \
  --out $R/variants 2>&1 | grep -E '"pass": "overhead' | cut -c1-180 | tee $R/variants.txt
