#!/usr/bin/env bash
# run13 call 5: the persistent forward with its tiles handed out at run time
# (launch.HOPPER_DYNAMIC_TILES, kernels/hopper.py DYNAMIC). The persistent and three-consumer
# GPU tests in 6 shards (their oracle cases and bit-for-bit equality with one CTA per tile, now
# also with dynamic tiles), compute-sanitizer memcheck on it, then hopper.py with ours and the
# forward persistent with dynamic tiles everywhere (where ours is persistent it has fixed
# tiles, elsewhere one CTA per tile), no peers.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
python -m pytest --collect-only -q tests/test_hopper.py 2>/dev/null | grep "::" | grep -E "persistent|three" > /tmp/sel.txt
wc -l < /tmp/sel.txt
for i in 0 1 2 3 4 5; do
  awk -v i=$i 'NR % 6 == i' /tmp/sel.txt > /tmp/sel$i.txt
  timeout 200 python -m pytest -q -p no:cacheprovider $(cat /tmp/sel$i.txt) > /tmp/sel_out$i.txt 2>&1 &
done
wait
cat /tmp/sel_out*.txt > $OUT/tests.txt
grep -h -E "passed|failed|error" /tmp/sel_out*.txt | tail -6
grep -h -E "^FAILED|^ERROR" /tmp/sel_out*.txt | head
timeout 100 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --persistent 2 --dynamic > $OUT/memcheck_dynamic.txt 2>&1
tail -n 3 $OUT/memcheck_dynamic.txt
for part in dense sparse; do
  timeout 150 python benchmarks/hopper.py --only $part --no-peers \
    --set "HOPPER_PERSISTENT=True;HOPPER_DYNAMIC_TILES=True" --out $OUT/$part 2>&1 | tail -1
done
python - <<'PY'
import json, os
for part in ("dense", "sparse"):
    try:
        rows = json.load(open(os.path.join(os.environ["OUT"], part, "hopper.json")))["rows"]
    except OSError as exc:
        print(part, "missing", exc)
        continue
    ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
    for case in dict.fromkeys(r["case"] for r in rows):
        r = ms.get((case, "ours", "fwd"))
        b = ms.get((case, "ours-HOPPER_PERSISTENT=True;HOPPER_DYNAMIC_TILES=True", "fwd"))
        print(f"{case[:44]:44s} fwd ours {r['ms']:.3f} ({r['tflops']:.0f}) | "
              f"persistent+dynamic {b['ms']:.3f}: {r['ms'] / b['ms']:.3f}x {b.get('note', '')[:40]}")
PY
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv $OUT/*/fa4_ratio.json
