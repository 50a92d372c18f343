#!/usr/bin/env bash
# run38 call 2 (stop 56): the forward's row max and row sum by halves (launch.HOPPER_FWD_ROW_TREE,
# kernels/hopper.py _row_reduce). Its GPU tests (bit 1 bit-identical to the default, bits 1+2
# against the float64 oracle), the portable path's launch-count test fixed for SPARSEFLASH_HOPPER_BWD=0
# (it failed in call 1: it counted the Hopper backward's four launches), then parity.py's variants
# at d=128 (16K, H=16, causal, bf16: none, dropout p=0.1, softcap 30, each with and without it).
#   OUT=DIR bash benchmarks/results/h200-hopper/run38-stop56/gpu2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run38c2 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
timeout ${TLIMIT:-150} python -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "by_halves" \
  2>&1 | tail -4 | tee $R/tests_tree.txt
SPARSEFLASH_HOPPER=0 SPARSEFLASH_HOPPER_BWD=0 timeout 60 python -m pytest -q -p no:cacheprovider \
  tests/test_attention.py -k "skip_the_jit" 2>&1 | tail -2 | tee $R/tests_jit_portable.txt
timeout 60 python -m pytest -q -p no:cacheprovider tests/test_attention.py -k "skip_the_jit" 2>&1 | tail -2 | tee $R/tests_jit_hopper.txt
timeout ${PLIMIT:-200} python benchmarks/parity.py --variants --head-dim 128 \
  --only 'none, row max by halves$;none, row max and sum by halves$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, row max by halves$;softcap=30 folded$;softcap=30 folded, row max by halves$' \
  --out $R/variants128 2>&1 | grep -E '"pass": "overhead' | cut -c1-200 | tee $R/variants128.txt
