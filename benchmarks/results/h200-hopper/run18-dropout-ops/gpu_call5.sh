#!/usr/bin/env bash
# run18 call 5: compute-sanitizer on the Hopper kernels with dropout in the default form 3
# (inline-PTX Philox products and select): memcheck with dropout (one CTA per tile, and the
# persistent forward with at most 2 CTAs), racecheck with dropout.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 110 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --dropout > $OUT/memcheck_dropout.txt 2>&1
tail -n 4 $OUT/memcheck_dropout.txt
timeout 110 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --dropout --persistent 2 > $OUT/memcheck_dropout_persistent.txt 2>&1
tail -n 4 $OUT/memcheck_dropout_persistent.txt
timeout 130 compute-sanitizer --tool racecheck python benchmarks/sanitize.py --dropout > $OUT/racecheck_dropout.txt 2>&1
tail -n 6 $OUT/racecheck_dropout.txt
