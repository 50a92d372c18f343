#!/usr/bin/env bash
# run15 call 7: compute-sanitizer on the backward with the fused dQ (on by default; the script
# forces the Hopper kernels): memcheck with and without dropout, racecheck.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 120 compute-sanitizer --tool memcheck python benchmarks/sanitize.py > $OUT/memcheck.txt 2>&1
tail -n 4 $OUT/memcheck.txt
timeout 120 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --dropout > $OUT/memcheck_dropout.txt 2>&1
tail -n 4 $OUT/memcheck_dropout.txt
timeout 200 compute-sanitizer --tool racecheck python benchmarks/sanitize.py > $OUT/racecheck.txt 2>&1
grep -E "hazard|SUMMARY|oracle" $OUT/racecheck.txt | tail -n 14
