#!/usr/bin/env bash
# run40 call 3 (stop 58): the 39 GPU tests of tests/test_hopper.py that call 2's shards did not
# reach (rest_ids.txt) in 8 parallel shards, the SASS tests of the fused dK/dV kernel (one failed
# on this kind of machine in call 1) beside them, then a second sample of the split loops with
# the softcap (parity.py --variants, 16K causal, d=128 then d=64). Everything lands in $OUT/run.tgz.
#   OUT=DIR bash benchmarks/results/h200-hopper/run40-stop58/gpu3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
D=benchmarks/results/h200-hopper/run40-stop58
R=/tmp/run40-3 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
  -k "test_fused_dq_compiles_into_the_dkdv_kernel" > $R/sass_tests.txt 2>&1 &
bash benchmarks/gpu_shards.sh @$D/rest_ids.txt 8 ${TLIMIT:-150} $R/tests 2>&1 | tail -30 | tee $R/tests.txt
wait
tail -25 $R/sass_tests.txt | cut -c1-300
for hd in 128 64; do
  timeout ${PLIMIT:-110} python benchmarks/parity.py --variants --head-dim $hd \
    --only 'none, split loops$;softcap=30 folded$;softcap=30 folded, split loops$' \
    --out $R/variants$hd 2>&1 | grep -E '"pass": "overhead' | cut -c1-180 | tee $R/variants$hd.txt
done
