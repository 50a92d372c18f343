#!/usr/bin/env bash
# Run pytest files on a GPU host in parallel shards (a CUDA fault poisons the rest of its
# process, and the serial GPU suite takes ~13 minutes).
#   bash benchmarks/gpu_shards.sh "TEST_PATHS" NUM_SHARDS TIMEOUT_S OUT_DIR
# Writes OUT_DIR/pytest_shard<i>.txt; prints each shard's summary and the failures.
set -u
paths=$1; shards=$2; limit=$3; out=$4
mkdir -p "$out"
python -m pytest --collect-only -q $paths 2>/dev/null | grep "::" > /tmp/gpu_shard_ids.txt
for ((i = 0; i < shards; i++)); do
  awk -v i=$i -v n=$shards 'NR % n == i' /tmp/gpu_shard_ids.txt > /tmp/gpu_shard$i.txt
  timeout "$limit" python -m pytest -q -p no:cacheprovider $(cat /tmp/gpu_shard$i.txt) \
    > "$out/pytest_shard$i.txt" 2>&1 &
done
wait
tail -n 2 "$out"/pytest_shard*.txt
grep -h -E "^FAILED|^ERROR" "$out"/pytest_shard*.txt | head -20
