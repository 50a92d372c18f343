#!/usr/bin/env bash
# Stop 49, call 2 (one H200): 8-bit draws in the "quad" dropout mapping (sparseflash.philox;
# kernels/hopper.py _quad8_words, _quad8_words_t). The GPU tests of dropout (tests_dropout.txt:
# test_hopper -k dropout, test_parity's quad / kernel-mask / dropout tests) in 10 shards, then
# the A/B of the draws in one process per head dim (parity.py --variants: none, 16-bit quad
# (the default), 8-bit quad, 8-bit mma, all 7 rounds; 16K, H=16, causal, p=0.1).
#   OUT=DIR [DIMS="128 64"] [NOTESTS=1] bash benchmarks/results/h200-hopper/run31-stop49/gpu_call2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
if [ -z "${NOTESTS:-}" ]; then
  bash benchmarks/gpu_shards.sh @benchmarks/results/h200-hopper/run31-stop49/tests_dropout.txt \
    10 ${TLIMIT:-200} $OUT/tests > /dev/null 2>&1
  for f in $OUT/tests/pytest_shard*.txt; do echo "== $f"; tail -n 2 $f; done > $OUT/tests.txt
  grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -60 >> $OUT/tests.txt
  rm -rf $OUT/tests
  grep -h -E "passed|failed|FAILED|ERROR|^E " $OUT/tests.txt | cut -c1-300 | head -40
fi
for d in ${DIMS:-128}; do
  timeout ${VLIMIT:-170} python benchmarks/parity.py --variants --head-dim $d --workers 4 \
    --only 'dropout 16-bit quad, 7 rounds$;dropout 8-bit quad, 7 rounds$;dropout 8-bit mma, 7 rounds$' \
    --out $OUT/variants_d$d 2>&1 | grep -v Warning | tail -n 30
done
