#!/usr/bin/env bash
# run34 (stop 52), call 1 (about 550 s):
# A. alone (no other GPU or CPU load): where our forward+backward's host time goes,
#    `host_bound_probe.py --split` (finer stages since stop 52: plan builds, descriptor copies,
#    Triton's TMA fills, CUDA allocations by phase);
# B. together: run33's 16 unreached stop-48 ids; test_pipelined_forward_on_one_gpu three times
#    alone (its rank 0 was still running after 300 s in run33); racecheck and memcheck on the
#    persistent forward with run-time tiles published in global slots
#    (SPARSEFLASH_HOPPER_TILE_SLOT=global), racecheck on the probe's modes 8 (shared slot, warp
#    barrier) and 9 (global slot); the persistent/dynamic tests with the global slot.
#   OUT=DIR bash benchmarks/results/h200-hopper/run34-stop52/gpu_call1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
echo "== A. host split (alone)"
timeout ${HLIMIT:-200} python benchmarks/host_bound_probe.py --split --out $OUT/host 2>&1 | grep -v Warning | tail -200
here=benchmarks/results/h200-hopper/run33-stop51
for i_ran in 0:18 1:23 2:27 3:27; do
  awk -v i=${i_ran%:*} 'NR % 8 == i' $here/call3/ids.txt | tail -n +$(( ${i_ran#*:} + 1 ))
done > /tmp/unreached.txt
bash benchmarks/gpu_shards.sh @/tmp/unreached.txt 4 ${TLIMIT:-330} $OUT/unreached > $OUT/unreached.txt 2>&1 &
for i in 1 2 3; do
  timeout 150 python -m pytest -q -p no:cacheprovider \
    tests/test_distributed.py::test_pipelined_forward_on_one_gpu > $OUT/pipelined_$i.txt 2>&1
done &
SPARSEFLASH_HOPPER_TILE_SLOT=global timeout 200 compute-sanitizer --tool racecheck --racecheck-report all \
  --print-limit 40 python benchmarks/sanitize.py --persistent 3 > $OUT/racecheck_global.txt 2>&1 &
SPARSEFLASH_HOPPER_TILE_SLOT=global timeout 200 compute-sanitizer --tool memcheck \
  python benchmarks/sanitize.py --persistent 3 > $OUT/memcheck_global.txt 2>&1 &
for m in 8 9; do
  timeout 100 compute-sanitizer --tool racecheck --racecheck-report all --print-limit 20 \
    python benchmarks/sanitize_ws_variants.py $m > $OUT/racecheck_probe_$m.txt 2>&1 &
done
python -m pytest --collect-only -q tests/test_hopper.py -k "persistent or dynamic" 2>/dev/null | grep "::" > /tmp/ids_dyn.txt
SPARSEFLASH_HOPPER_TILE_SLOT=global bash benchmarks/gpu_shards.sh @/tmp/ids_dyn.txt 3 ${TLIMIT:-330} $OUT/global_tests > $OUT/global_tests.txt 2>&1 &
wait
echo "== racecheck, global slot"; grep -h -E "values|max |hazard detected|hopper.py:|SUMMARY" $OUT/racecheck_global.txt | sed 's/at __shared__ 0x[0-9a-f]*//' | sort | uniq -c | head -20
echo "== memcheck, global slot"; grep -h -E "ERROR SUMMARY|max " $OUT/memcheck_global.txt
for m in 8 9; do echo "== probe mode $m"; grep -h -E "values ok|hazard detected|sanitize_ws_variants.py:|SUMMARY" $OUT/racecheck_probe_$m.txt | sed 's/at __shared__ 0x[0-9a-f]*//' | sort | uniq -c | head -10; done
echo "== global-slot tests"; cut -c1-300 $OUT/global_tests.txt
echo "== unreached ids"; cut -c1-300 $OUT/unreached.txt
for i in 1 2 3; do echo "== pipelined $i"; tail -n 30 $OUT/pipelined_$i.txt | cut -c1-300; done
rm -rf $OUT/unreached $OUT/global_tests
