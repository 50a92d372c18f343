#!/usr/bin/env bash
# run20 call 2 (after the FA4 stash call, with the FA4 prefix): whether the short
# forward+backward cases are host-bound (benchmarks/host_bound_probe.py: ours, FA4, cuDNN),
# then the GPU oracle tests of the fused backward at the default (sm_scale now applied in dQ's
# conversion), in 4 shards, their outputs in one file.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
timeout ${LIMIT:-240} python benchmarks/host_bound_probe.py --out $OUT/host 2>&1 | grep -v Warning
# fused_tests.txt: pytest --collect-only -q tests/test_hopper.py -k "fused_dq or statistics_modes
# or key_padding or per_batch or conditional"
bash benchmarks/gpu_shards.sh "$(cat benchmarks/results/h200-hopper/run20-dq-first/fused_tests.txt)" \
  4 ${TLIMIT:-170} $OUT/tests > /dev/null 2>&1
for f in $OUT/tests/pytest_shard*.txt; do echo "== $f"; tail -n 3 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR" $OUT/tests/pytest_shard*.txt >> $OUT/tests.txt
rm -rf $OUT/tests
cat $OUT/tests.txt
