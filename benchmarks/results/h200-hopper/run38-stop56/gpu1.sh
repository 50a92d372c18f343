#!/usr/bin/env bash
# run38 call 1 (stop 56): stop 55's staged gpu3.sh, cut to fit one call. First the GPU validation
# still owed: tests/test_attention.py with the Hopper kernels off (the portable kernels with
# run34's portable-direct-launch.patch, applied in stop 55), then the two cases of
# test_hopper_release_by_every_thread_is_bit_identical that run37 call 2's limit cut. Then where
# the barrier stall sits: Nsight Compute's source counters (warp stall samples by SASS
# instruction) on the d=128 forward and dK/dV kernels, dense causal 16K, H=16, bf16, without
# options and with dropout p=0.1, reduced by benchmarks/ncu_hot_sass.py.
#   OUT=DIR bash benchmarks/results/h200-hopper/run38-stop56/gpu1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run38c1 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" | tee -a $R/gpu.txt
ncu --version | tail -1 >> $R/gpu.txt
SPARSEFLASH_HOPPER=0 SPARSEFLASH_HOPPER_BWD=0 timeout ${ALIMIT:-230} python -m pytest -q -p no:cacheprovider \
  tests/test_attention.py 2>&1 | tail -8 | tee $R/tests_portable.txt
timeout ${TLIMIT:-90} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
  -k "release_by_every_thread_is_bit_identical and d64-three" 2>&1 | tail -3 | tee $R/tests_bit.txt
for kv in "fwd none" "dkdv none" "fwd dropout" "dkdv dropout"; do
  set -- $kv; kern=$1; v=$2
  opt=$( [ $v = dropout ] && echo "--dropout 0.1" )
  tag=${kern}_$v
  timeout ${NLIMIT:-60} ncu --kernel-name regex:${kern} --launch-count 1 --section SourceCounters \
    --section WarpStateStats --import-source no -o $R/$tag -f python benchmarks/ncu_${kern}.py --d 128 --causal $opt \
    > $R/$tag.log 2>&1
  echo "== $tag rc=$?"
  ncu -i $R/$tag.ncu-rep --page source --csv --print-source sass > $R/$tag.source.csv 2>&1 &&
    python benchmarks/ncu_hot_sass.py $R/$tag.source.csv $R/$tag.hot.txt --min 0.3 && head -30 $R/$tag.hot.txt | cut -c1-160
  ncu -i $R/$tag.ncu-rep --page details --print-units base > $R/$tag.details.txt 2>&1
  rm -f $R/$tag.ncu-rep
done
