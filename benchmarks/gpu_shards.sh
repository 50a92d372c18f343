#!/usr/bin/env bash
# Run pytest tests on a GPU host in parallel shards (a CUDA fault poisons the rest of its
# process, and the serial GPU suite takes ~13 minutes).
#   bash benchmarks/gpu_shards.sh "TEST_PATHS" NUM_SHARDS TIMEOUT_S OUT_DIR ["K_EXPR"]
# TEST_PATHS: pytest paths or node ids, or @FILE for a file of node ids, one a line.
# K_EXPR: a pytest -k expression that selects among TEST_PATHS' tests (spaces allowed), e.g.
#   bash benchmarks/gpu_shards.sh tests/test_hopper.py 8 330 OUT "test_hopper_ and softcap"
# (the 261 GPU tests of tests/test_hopper.py, -k test_hopper_, took 8 shards about 300 s on an
# H100 in stop 58; the whole suite does not fit one device call).
# Shards are planned by the tests' recorded durations (benchmarks/shard_plan.py: longest first to
# the least-loaded shard, from the --durations lists under benchmarks/results; SHARD_PLAN=lines
# deals them out by line number instead, line NR to shard NR % NUM_SHARDS).
# Writes OUT_DIR/pytest_shard<i>.txt (with the shard's 10 slowest tests, to plan shards by) and
# OUT_DIR/not_run.txt (the ids no shard finished: rerun them with @OUT_DIR/not_run.txt);
# prints each shard's summary and the failures. Its id lists go to a folder of its own
# (mktemp), so several selections may run at once, each with its own environment
# (e.g. `SPARSEFLASH_HOPPER_WALK=descending bash benchmarks/gpu_shards.sh ... &`).
set -u
# each failure's report is printed when it happens (tests/conftest.py), so a shard cut by its
# time limit still shows it
export SPARSEFLASH_REPORT_EARLY=1
paths=$1; shards=$2; limit=$3; out=$4; kexpr=${5:-}
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu_shards.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [[ -n $kexpr && $paths == @* ]]; then
  echo "gpu_shards.sh: K_EXPR applies to collected paths, not to an @FILE of ids" >&2
  exit 2
fi
if [[ $paths == @* ]]; then
  grep "::" "${paths#@}" > "$tmp/ids.txt"
else
  python -m pytest --collect-only -q $paths ${kexpr:+-k "$kexpr"} 2>/dev/null | grep "::" > "$tmp/ids.txt"
fi
here=$(cd "$(dirname "$0")" && pwd)
if [[ ${SHARD_PLAN:-durations} == lines ]] || ! python "$here/shard_plan.py" plan "$tmp/ids.txt" "$shards" "$tmp"; then
  for ((i = 0; i < shards; i++)); do
    awk -v i=$i -v n=$shards 'NR % n == i' "$tmp/ids.txt" > "$tmp/shard$i.txt"
  done
fi
for ((i = 0; i < shards; i++)); do
  if [ -s "$tmp/shard$i.txt" ]; then
    # one argument a line: parametrised ids may hold spaces ("rows[-1, 0, 0]")
    mapfile -t ids < "$tmp/shard$i.txt"
    # -v: a line a finished test, so a shard cut by its limit shows which ones passed (stop 72's
    # run53 had to infer its cut test from the ids' order)
    timeout "$limit" python -m pytest -v -p no:cacheprovider --durations=10 "${ids[@]}" \
      > "$out/pytest_shard$i.txt" 2>&1 &
  fi
done
wait
tail -n 2 "$out"/pytest_shard*.txt
if ls "$out"/pytest_shard*.txt >/dev/null 2>&1 \
    && python "$here/shard_plan.py" unfinished "$tmp/ids.txt" "$out"/pytest_shard*.txt > "$out/not_run.txt"; then
  echo "gpu_shards.sh: $(grep -c "::" "$out/not_run.txt") of $(grep -c "::" "$tmp/ids.txt") ids not finished ($out/not_run.txt)"
fi
grep -h -E "^FAILED|^ERROR|^EARLY FAILED" "$out"/pytest_shard*.txt | sort -u | head -20
