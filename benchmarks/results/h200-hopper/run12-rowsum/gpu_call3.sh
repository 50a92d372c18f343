#!/usr/bin/env bash
# run12 call 3: call 2's oracle test passed out and gradients but not the LSE (1e-4): the sums
# of 16-bit P carry its rounding into the LSE. Before deciding, the speed: hopper.py with ours
# ("mma") and ours-rowsum-alu in one run, no peers, no tests.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 150 python benchmarks/hopper.py --only dense --no-peers --rowsum alu --out $OUT/dense 2>&1 | tail -1
timeout 150 python benchmarks/hopper.py --only sparse --no-peers --rowsum alu --out $OUT/sparse 2>&1 | tail -1
python - <<'PY'
import json, os
for part in ("dense", "sparse"):
    try:
        rows = json.load(open(os.path.join(os.environ["OUT"], part, "hopper.json")))["rows"]
    except OSError as exc:
        print(part, "missing:", exc)
        continue
    ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
    for case in dict.fromkeys(r["case"] for r in rows):
        for p in ("fwd", "fwd+bwd"):
            base, r = ms.get((case, "ours-rowsum-alu", p)), ms.get((case, "ours", p))
            if base and r:
                print(f"{case:48s} {p:8s} alu {base['ms']:.3f} mma {r['ms']:.3f} "
                      f"({base['ms'] / r['ms']:.3f}x) {r.get('note', '')[:50]}")
PY
rm -f $OUT/*/hopper.png
