#!/usr/bin/env bash
# run20 call 1: the fused backward's product order (launch.HOPPER_DQ_FIRST). The A/B without
# peers (ours at the default, dK first, against ours with dQ first, and with dQ first at 240
# registers a consumer thread where the default takes 232), one process per part: dense, then
# sparse; then the GPU oracle tests of tests/test_hopper.py with dQ first.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
for part in dense sparse; do
  timeout ${LIMIT:-190} python benchmarks/hopper.py --only $part --no-peers \
    --set "HOPPER_DQ_FIRST=True" \
    --set "HOPPER_DQ_FIRST=True;_HOPPER_BWD_REGS={'plain': 240, 'causal': 240}" \
    --out $OUT/$part 2>&1 | tail -3
done
SPARSEFLASH_HOPPER_DQ_FIRST=1 bash benchmarks/gpu_shards.sh "tests/test_hopper.py" 8 ${TLIMIT:-180} \
  $OUT/tests_dq_first > /dev/null 2>&1
tail -qn 1 $OUT/tests_dq_first/pytest_shard*.txt
grep -h -E "^FAILED|^ERROR" $OUT/tests_dq_first/pytest_shard*.txt | head -20
rm -f $OUT/*/hopper.png
