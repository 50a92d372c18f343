#!/usr/bin/env bash
# For the next session (not run yet): compute-sanitizer (memcheck, racecheck) on run30's forward
# pipeline (K and V released separately at d=128, two Q buffers, persistent CTAs with tiles
# handed out at run time), on every SM and on 3 CTAs so that each CTA cycles through
# both Q buffers several times; with and without dropout:
#   OUT=DIR bash benchmarks/results/h200-hopper/run30-kv-split/gpu_next_sanitize.sh
# racecheck's 4 hazards in the dK/dV kernel are the known false positive (docs/hopper.md, Tests).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
export SPARSEFLASH_HOPPER_FWD_PIPELINE=run30
mkdir -p $OUT
# five runs of at most SLIMIT (100) s each, inside one 600-second call
for run in "memcheck" "memcheck --persistent 3" "memcheck --persistent 3 --dropout" \
           "racecheck --persistent 3" "racecheck --persistent 3 --dropout"; do
  set -- $run
  tool=$1; shift
  name=$(echo "$run" | tr -d '-' | tr ' ' '_')
  timeout ${SLIMIT:-100} compute-sanitizer --tool $tool python benchmarks/sanitize.py "$@" > $OUT/$name.txt 2>&1
  echo "rc=$?" >> $OUT/$name.txt
  echo "$name: $(grep -h -E "ERROR SUMMARY|RACECHECK SUMMARY|max|rc=" $OUT/$name.txt | tr '\n' ' ' | cut -c1-300)"
done | tee $OUT/summary.txt
