#!/usr/bin/env bash
# For the next session with a device (not run yet). run32 call 1 showed that the consumers'
# release was never the cause of racecheck's tile-slot hazards: the sm_90 PTX already has a
# `bar.sync <wg>, 128` before each consumer warpgroup's one-thread arrive on q_empty, and the
# extra barrier of run31's q-release-barrier.patch left them (376 errors; 416 before). What the
# PTX does show: `_publish_tile`'s store is made by all 32 lanes of the producer warp, unpredicated,
# while only the elected lane arrives on q_bar (`@%p mbarrier.arrive.expect_tx`), so lanes 1-31's
# stores are not ordered before the release; racecheck's RAW reports name lane 31 (thread 351) as
# the writer. publish-warp-barrier.patch adds gl.thread_barrier() after the store (bar.warp.sync -1
# in the one-warp producer, in the sm_90 PTX compiled on the CPU). This script: racecheck,
# synccheck and memcheck on the patched forward (3 persistent CTAs, run-time tiles), the
# persistent/run-time tile tests, and the dense forward timed patched and unpatched. Beside them
# racecheck on benchmarks/sanitize_ws_variants.py modes 7 and 8 (the handout with the slot reused
# across phases, without and with the barrier; compiled for sm_90 on the CPU in stop 50, not run).
#   OUT=DIR bash benchmarks/results/h200-hopper/run32-stop50/gpu_next_publish.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
rm -rf /tmp/sparseflash-unpatched && cp -r sparseflash /tmp/sparseflash-unpatched
git apply benchmarks/results/h200-hopper/run32-stop50/publish-warp-barrier.patch || { echo "patch failed"; exit 1; }
timeout 150 compute-sanitizer --tool racecheck --racecheck-report all --print-limit 40 \
  python benchmarks/sanitize.py --persistent 3 > $OUT/racecheck.txt 2>&1 &
# the probe's modes 7 (the kernel's handout: no barrier between the 32-lane store and the
# one-lane expect, as in its PTX) and 8 (with the patch's barrier)
for m in 7 8; do
  timeout 100 compute-sanitizer --tool racecheck --racecheck-report all --print-limit 20 \
    python benchmarks/sanitize_ws_variants.py $m > $OUT/racecheck_probe_$m.txt 2>&1 &
done
timeout 150 compute-sanitizer --tool synccheck python benchmarks/sanitize.py --persistent 3 > $OUT/synccheck.txt 2>&1 &
timeout 150 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --persistent 3 > $OUT/memcheck.txt 2>&1 &
python -m pytest --collect-only -q tests/test_hopper.py -k "persistent or dynamic" 2>/dev/null | grep "::" > /tmp/ids_publish.txt
bash benchmarks/gpu_shards.sh @/tmp/ids_publish.txt 4 ${TLIMIT:-200} $OUT/tests > $OUT/tests.txt 2>&1 &
wait
echo "== racecheck"; grep -h -E "hazard detected|hopper.py:|SUMMARY" $OUT/racecheck.txt | sed 's/at __shared__ 0x[0-9a-f]*//' | sort | uniq -c | head -16
for m in 7 8; do echo "== probe mode $m"; grep -h -E "values ok|hazard detected|sanitize_ws_variants.py:|SUMMARY" $OUT/racecheck_probe_$m.txt | sed 's/at __shared__ 0x[0-9a-f]*//' | sort | uniq -c | head -10; done
echo "== synccheck"; grep -h -E "ERROR SUMMARY" $OUT/synccheck.txt
echo "== memcheck"; grep -h -E "ERROR SUMMARY|max \|" $OUT/memcheck.txt
echo "== tests"; cut -c1-300 $OUT/tests.txt; rm -rf $OUT/tests
for tree in patched unpatched; do
  [ $tree = unpatched ] && rm -rf sparseflash && cp -r /tmp/sparseflash-unpatched sparseflash
  echo "== dense forward, $tree"
  timeout ${PLIMIT:-110} python benchmarks/hopper.py --only dense --no-peers --heat 2 \
    --cases "${CASES:-dense N=16384;dense causal N=4096}" --out $OUT/$tree 2>&1 | grep '"pass": "fwd"'
done
# then: does our forward+backward wait for the GPU? (run20: host 841 us a call against 113 for
# the forward; run32's short rows ran slow with FA4 slow too). behind_us and syncs columns.
timeout ${HLIMIT:-150} python benchmarks/host_bound_probe.py --only-ours --out $OUT/host 2>&1 | grep -v Warning | tail -16
