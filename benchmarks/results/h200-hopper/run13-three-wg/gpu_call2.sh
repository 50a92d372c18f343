#!/usr/bin/env bash
# run13 call 2: compute-sanitizer on the three-consumer forward (memcheck with and without
# dropout, racecheck), then the dense cases with ours (three consumers at d=64, 4 slots) beside
# a 6-slot ring (ours-s6, d=64 only) and the softmax in a block of its own at d=64
# (ours-HOPPER_FWD_OVERLAP=True), no peers.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 100 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --consumers 3 > $OUT/memcheck_three.txt 2>&1
tail -n 4 $OUT/memcheck_three.txt
timeout 100 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --consumers 3 --dropout > $OUT/memcheck_three_dropout.txt 2>&1
tail -n 4 $OUT/memcheck_three_dropout.txt
timeout 120 compute-sanitizer --tool racecheck python benchmarks/sanitize.py --consumers 3 > $OUT/racecheck_three.txt 2>&1
tail -n 6 $OUT/racecheck_three.txt
timeout 240 python benchmarks/hopper.py --only dense --no-peers --stages 64:6 --set HOPPER_FWD_OVERLAP=True --out $OUT/dense 2>&1 | tail -1
python - <<'PY'
import json, os
rows = json.load(open(os.path.join(os.environ["OUT"], "dense", "hopper.json")))["rows"]
ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
for case in dict.fromkeys(r["case"] for r in rows):
    for p in ("fwd", "fwd+bwd"):
        r = ms.get((case, "ours", p))
        line = f"{case:28s} {p:8s} ours {r['ms']:.3f} ({r.get('tflops', 0):.0f})"
        for impl in ("ours-s6", "ours-HOPPER_FWD_OVERLAP=True"):
            o = ms.get((case, impl, p))
            if o:
                line += f" | {impl} {o['ms']:.3f} ({r['ms'] / o['ms']:.3f}x faster)"
        print(line)
PY
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv $OUT/*/fa4_ratio.json
