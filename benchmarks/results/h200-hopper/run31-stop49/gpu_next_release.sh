#!/usr/bin/env bash
# For the next session with a device (not run yet). Racecheck's 416 errors on the forward's
# run-time tile slot (run31 callA/racecheck: all on _publish_tile's store against _read_tile's
# load, 28 WAR and 12 RAW of the 40 displayed; the probe's modes 5 and 6 report none on the
# slot). Candidate: a consumer warpgroup releases Q and the slot with one thread's arrive on
# q_empty, which orders only that thread's read of the slot before the producer's next store.
# q-release-barrier.patch puts a warpgroup barrier (gl.thread_barrier(): bar.sync with the
# partition's own id, 2 or 3, 128 threads, in the sm_90 PTX compiled on the CPU) before both
# arrives. This script: racecheck and memcheck on the patched kernel (3 persistent CTAs), the
# persistent/dynamic forward tests, then the forward timed beside the unpatched tree.
#   OUT=DIR bash benchmarks/results/h200-hopper/run31-stop49/gpu_next_release.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
cp -r sparseflash /tmp/sparseflash-unpatched
git apply benchmarks/results/h200-hopper/run31-stop49/q-release-barrier.patch || exit 1
timeout 120 compute-sanitizer --tool racecheck --racecheck-report all --print-limit 40 \
  python benchmarks/sanitize.py --persistent 3 > $OUT/racecheck_patched.txt 2>&1
grep -h -E "hopper.py:|SUMMARY" $OUT/racecheck_patched.txt | sort | uniq -c | head -12
timeout 120 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --persistent 3 2>&1 \
  | grep -E "ERROR SUMMARY|max \|out" | head -6
timeout 200 python -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "persistent or dynamic" 2>&1 | tail -3
for tree in patched unpatched; do
  [ $tree = unpatched ] && rm -rf sparseflash && cp -r /tmp/sparseflash-unpatched sparseflash
  timeout 150 python benchmarks/hopper.py --only dense --no-peers --heat 3 \
    --out $OUT/$tree 2>&1 | grep -v Warning | tail -6
done
