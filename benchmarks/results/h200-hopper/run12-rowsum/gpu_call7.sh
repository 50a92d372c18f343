#!/usr/bin/env bash
# run12 call 7: compute-sanitizer on the forward with its softmax in a block of its own at both
# head dims (--overlap), with and without dropout: memcheck, then racecheck.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 100 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --overlap > $OUT/memcheck_overlap.txt 2>&1
tail -n 4 $OUT/memcheck_overlap.txt
timeout 100 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --overlap --dropout > $OUT/memcheck_overlap_dropout.txt 2>&1
tail -n 4 $OUT/memcheck_overlap_dropout.txt
timeout 120 compute-sanitizer --tool racecheck python benchmarks/sanitize.py --overlap > $OUT/racecheck_overlap.txt 2>&1
tail -n 6 $OUT/racecheck_overlap.txt
