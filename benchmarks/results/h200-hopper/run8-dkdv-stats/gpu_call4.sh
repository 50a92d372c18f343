#!/usr/bin/env bash
# run8 calls 4 and 5: the packed shapes that faulted, then the whole tests/test_hopper.py in 4
# parallel shards (call 4: padded rows, still faulting; call 5: the copies only where aligned).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 60 python benchmarks/results/h200-hopper/run8-dkdv-stats/debug_packed.py 2>&1 | tee $OUT/debug_packed.txt
python -m pytest --collect-only -q tests/test_hopper.py 2>/dev/null | grep "::" > /tmp/ids.txt
for i in 0 1 2 3; do
  awk -v i=$i 'NR % 4 == i' /tmp/ids.txt > /tmp/shard$i.txt
  timeout 230 python -m pytest -q -p no:cacheprovider $(cat /tmp/shard$i.txt) > $OUT/pytest_shard$i.txt 2>&1 &
done
wait
tail -n 2 $OUT/pytest_shard*.txt
grep -h -E "^FAILED|^ERROR" $OUT/pytest_shard*.txt | head -20
