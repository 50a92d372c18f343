#!/usr/bin/env bash
# run26 call 3: compute-sanitizer with K and V as register operands forced on
# (SPARSEFLASH_HOPPER_BWD_KV_REGS=1: benchmarks/sanitize.py's d=64 case is GQA 4/2, where the
# default keeps them in shared memory), and memcheck with the defaults (128-query steps, dQ split
# by rows); the four in parallel:
#   OUT=DIR bash benchmarks/results/h200-hopper/run26-kv-regs/gpu_call3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
SPARSEFLASH_HOPPER_BWD_KV_REGS=1 timeout 240 compute-sanitizer --tool memcheck python benchmarks/sanitize.py > $OUT/memcheck_kv.txt 2>&1 &
SPARSEFLASH_HOPPER_BWD_KV_REGS=1 timeout 240 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --dropout > $OUT/memcheck_kv_dropout.txt 2>&1 &
SPARSEFLASH_HOPPER_BWD_KV_REGS=1 timeout 300 compute-sanitizer --tool racecheck python benchmarks/sanitize.py > $OUT/racecheck_kv.txt 2>&1 &
timeout 240 compute-sanitizer --tool memcheck python benchmarks/sanitize.py > $OUT/memcheck_default.txt 2>&1 &
wait
tail -n 4 $OUT/*.txt
