#!/usr/bin/env bash
# run8 call 3: the whole tests/test_hopper.py in 4 parallel shards (compilation is CPU-bound),
# then issue 11's overheads (parity.py) with the Hopper dK/dV kernel under softcap too.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
python -m pytest --collect-only -q tests/test_hopper.py 2>/dev/null | grep "::" > /tmp/ids.txt
for i in 0 1 2 3; do
  awk -v i=$i 'NR % 4 == i' /tmp/ids.txt > /tmp/shard$i.txt
  timeout 300 python -m pytest -q -p no:cacheprovider $(cat /tmp/shard$i.txt) > $OUT/pytest_shard$i.txt 2>&1 &
done
wait
tail -n 3 $OUT/pytest_shard*.txt
grep -h -E "FAILED|Error" $OUT/pytest_shard*.txt | head -20
timeout 250 python benchmarks/parity.py --out $OUT/parity 2>&1 | tail -1
python - <<'PY'
import csv, os
p = os.path.join(os.environ["OUT"], "parity/parity.csv")
if os.path.exists(p):
    for r in csv.DictReader(open(p)):
        print(" | ".join(str(r[k])[:60] for k in ("case", "impl", "pass", "ms", "note")))
PY
