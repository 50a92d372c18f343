#!/usr/bin/env bash
# Stop 50, first call (after FA4's first stash prefix): run31's staged Q/slot release
# (q-release-barrier.patch: a warpgroup barrier before each consumer's arrive on q_empty).
# Racecheck and memcheck on the patched forward (3 persistent CTAs) and the persistent/run-time
# tile tests (4 shards) at once, then the dense forward timed patched and unpatched.
#   OUT=DIR bash benchmarks/results/h200-hopper/run32-stop50/gpu_call1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
R=benchmarks/results/h200-hopper
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader > $OUT/gpu.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__)" >> $OUT/gpu.txt
git log -1 --format=%h >> $OUT/gpu.txt 2>/dev/null
rm -rf /tmp/sparseflash-unpatched && cp -r sparseflash /tmp/sparseflash-unpatched
git apply $R/run31-stop49/q-release-barrier.patch || { echo "patch failed"; exit 1; }
timeout 150 compute-sanitizer --tool racecheck --racecheck-report all --print-limit 40 \
  python benchmarks/sanitize.py --persistent 3 > $OUT/racecheck_patched.txt 2>&1 &
timeout 150 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --persistent 3 \
  > $OUT/memcheck_patched.txt 2>&1 &
python -m pytest --collect-only -q tests/test_hopper.py -k "persistent or dynamic" 2>/dev/null | grep "::" > /tmp/ids_release.txt
bash benchmarks/gpu_shards.sh @/tmp/ids_release.txt 4 ${TLIMIT:-200} $OUT/tests > /dev/null 2>&1 &
wait
for f in $OUT/tests/pytest_shard*.txt; do tail -n 1 $f; done > $OUT/tests_release.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -40 >> $OUT/tests_release.txt
rm -rf $OUT/tests
cat $OUT/gpu.txt
echo "== racecheck (patched)"; grep -h -E "hopper.py:|SUMMARY|max \|" $OUT/racecheck_patched.txt | sort | uniq -c | head -14
echo "== memcheck (patched)"; grep -h -E "ERROR SUMMARY|max \|" $OUT/memcheck_patched.txt | head -6
echo "== tests (patched)"; cat $OUT/tests_release.txt | cut -c1-300
for tree in patched unpatched; do
  [ $tree = unpatched ] && rm -rf sparseflash && cp -r /tmp/sparseflash-unpatched sparseflash
  echo "== dense forward, $tree"
  timeout ${PLIMIT:-110} python benchmarks/hopper.py --only dense --no-peers --heat 2 \
    --cases "${CASES:-dense N=16384;dense causal N=4096}" --out $OUT/$tree 2>&1 | grep -v Warning | tail -8
done
