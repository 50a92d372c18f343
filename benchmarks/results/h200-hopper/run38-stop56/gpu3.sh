#!/usr/bin/env bash
# run38 call 3 (stop 56): parity.py's row-tree variants at d=64 (16K, H=32, causal, bf16).
#   OUT=DIR bash benchmarks/results/h200-hopper/run38-stop56/gpu3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run38c3 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
timeout ${PLIMIT:-150} python benchmarks/parity.py --variants --head-dim 64 \
  --only 'none, row max by halves$;none, row max and sum by halves$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, row max by halves$' \
  --out $R/variants64 2>&1 | grep -E '"pass": "overhead' | cut -c1-200 | tee $R/variants64.txt
