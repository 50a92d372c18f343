#!/usr/bin/env bash
# run11 call 1: the persistent Hopper forward (launch.HOPPER_PERSISTENT): the whole GPU suite
# in 4 shards (the forward kernel's loop changed for the default too), then hopper.py with
# ours (one CTA per tile) and ours-persist in one run, no peers.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
bash benchmarks/gpu_shards.sh tests/test_hopper.py 4 240 $OUT
timeout 150 python benchmarks/hopper.py --only dense --no-peers --persistent --out $OUT/dense 2>&1 | tail -1
timeout 150 python benchmarks/hopper.py --only sparse --no-peers --persistent --out $OUT/sparse 2>&1 | tail -1
python - <<'PY'
import json, os
for part in ("dense", "sparse"):
    rows = json.load(open(os.path.join(os.environ["OUT"], part, "hopper.json")))["rows"]
    ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
    for case in dict.fromkeys(r["case"] for r in rows):
        for p in ("fwd", "fwd+bwd"):
            base, r = ms.get((case, "ours", p)), ms.get((case, "ours-persist", p))
            if base and r:
                print(f"{case:48s} {p:8s} {base['ms']:.3f} persist {r['ms']:.3f} "
                      f"({base['ms'] / r['ms']:.3f}x) {r.get('note', '')[:50]}")
PY
rm -f $OUT/*/hopper.png
