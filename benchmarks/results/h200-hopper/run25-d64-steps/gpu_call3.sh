#!/usr/bin/env bash
# run25 call 3: compute-sanitizer on the final tree (128-query dK/dV steps at d=64 by default;
# benchmarks/sanitize.py's d=64 case is GQA 4/2 with key padding that crosses a block):
#   OUT=DIR bash benchmarks/results/h200-hopper/run25-d64-steps/gpu_call3.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
timeout 150 compute-sanitizer --tool memcheck python benchmarks/sanitize.py > $OUT/memcheck.txt 2>&1
echo "rc=$?" >> $OUT/memcheck.txt
timeout 150 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --dropout > $OUT/memcheck_dropout.txt 2>&1
echo "rc=$?" >> $OUT/memcheck_dropout.txt
timeout 200 compute-sanitizer --tool racecheck python benchmarks/sanitize.py > $OUT/racecheck.txt 2>&1
echo "rc=$?" >> $OUT/racecheck.txt
tail -n 4 $OUT/*.txt
