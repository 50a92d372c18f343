#!/usr/bin/env bash
# run26 call 3 (a new session's first call): compute-sanitizer with K and V as register operands
# forced on (SPARSEFLASH_HOPPER_BWD_KV_REGS=1: benchmarks/sanitize.py's d=64 case is GQA 4/2,
# where the default keeps them in shared memory) and memcheck with the defaults, in parallel
# with kv_gqa_check.py and call 2's one failure run again alone (forced and default); then
# gqa_ab.py (timed, alone):
#   OUT=DIR bash benchmarks/results/h200-hopper/run26-kv-regs/gpu_call3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
SPARSEFLASH_HOPPER_BWD_KV_REGS=1 timeout 240 compute-sanitizer --tool memcheck python benchmarks/sanitize.py > $OUT/memcheck_kv.txt 2>&1 &
SPARSEFLASH_HOPPER_BWD_KV_REGS=1 timeout 240 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --dropout > $OUT/memcheck_kv_dropout.txt 2>&1 &
SPARSEFLASH_HOPPER_BWD_KV_REGS=1 timeout 300 compute-sanitizer --tool racecheck python benchmarks/sanitize.py > $OUT/racecheck_kv.txt 2>&1 &
timeout 240 compute-sanitizer --tool memcheck python benchmarks/sanitize.py > $OUT/memcheck_default.txt 2>&1 &
timeout 240 python benchmarks/results/h200-hopper/run26-kv-regs/kv_gqa_check.py > $OUT/kv_gqa_check.txt 2>&1
T="tests/test_hopper.py::test_hopper_backward_with_and_without_the_fused_dq[bigbird-d64-dq-kernel]"
for i in 1 2 3; do
  SPARSEFLASH_HOPPER_BWD_KV_REGS=1 timeout 120 python -m pytest -q -p no:cacheprovider "$T" 2>&1 | grep -E "Error|assert|passed|failed" >> $OUT/rerun_forced.txt
  timeout 120 python -m pytest -q -p no:cacheprovider "$T" 2>&1 | grep -E "Error|assert|passed|failed" >> $OUT/rerun_default.txt
done
wait
tail -n 4 $OUT/*.txt | cut -c1-300
timeout ${GLIMIT:-150} python benchmarks/results/h200-hopper/run26-kv-regs/gqa_ab.py $OUT/gqa_ab.json > $OUT/gqa_ab.log 2>&1
echo "rc=$?" >> $OUT/gqa_ab.log
cut -c1-400 $OUT/gqa_ab.log
