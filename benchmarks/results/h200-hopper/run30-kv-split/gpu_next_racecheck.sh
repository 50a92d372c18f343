#!/usr/bin/env bash
# For the next session (not run yet): where racecheck's 4 hazards on the forward's run-time tile
# slot come from (call 5; docs/hopper.md, "Tests", compute-sanitizer, run30's forward).
#   OUT=DIR bash benchmarks/results/h200-hopper/run30-kv-split/gpu_next_racecheck.sh
# benchmarks/sanitize_ws_variants.py: mode 3, the handshake racecheck credited (one lane's plain
# arrive); 5, the same completed by a TMA copy's bytes (expect_tx); 6, mode 5 with the value in
# a one-int32 slot stored by all 32 lanes of the producer warp, as _publish_tile does. Then the
# kernel itself with the analysis report, on 3 persistent CTAs at d=64 and d=128.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
for m in 3 5 6; do
  timeout ${SLIMIT:-90} compute-sanitizer --tool racecheck --print-limit 40 \
    python benchmarks/sanitize_ws_variants.py $m > $OUT/mode$m.txt 2>&1
  echo "rc=$?" >> $OUT/mode$m.txt
  echo "mode $m: $(grep -h -E "values ok|sanitize_ws_variants.py:[0-9]+|SUMMARY|rc=" $OUT/mode$m.txt | tr '\n' ' ' | cut -c1-400)"
done | tee $OUT/summary.txt
timeout ${SLIMIT:-90} compute-sanitizer --tool racecheck --racecheck-report all --print-limit 40 \
  python benchmarks/sanitize.py --persistent 3 > $OUT/kernel_report_all.txt 2>&1
echo "rc=$?" >> $OUT/kernel_report_all.txt
grep -h -E "hopper.py:(48[0-9]|49[0-9])|SUMMARY|rc=" $OUT/kernel_report_all.txt | head -20 | tee -a $OUT/summary.txt
