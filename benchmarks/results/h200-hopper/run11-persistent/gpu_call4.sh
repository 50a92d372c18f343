#!/usr/bin/env bash
# run11 call 4: compute-sanitizer on the persistent forward (at most 2 CTAs: each walks
# several query tiles): memcheck, then racecheck.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 110 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --persistent 2 > $OUT/memcheck_persistent.txt 2>&1
tail -n 4 $OUT/memcheck_persistent.txt
timeout 110 compute-sanitizer --tool racecheck python benchmarks/sanitize.py --persistent 2 > $OUT/racecheck_persistent.txt 2>&1
tail -n 6 $OUT/racecheck_persistent.txt
