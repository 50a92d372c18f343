#!/usr/bin/env bash
# run10 call 1: the forward's exponentials partly by an FMA-unit polynomial
# (launch._HOPPER_EXP_EMU): its GPU oracle tests, then hopper.py with ours (no polynomial),
# ours-e1 (1 in 4) and ours-e2 (1 in 2) in one run, no peers.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "polynomial or key_padding" > $OUT/pytest_emu.txt 2>&1
tail -n 3 $OUT/pytest_emu.txt
timeout 200 python benchmarks/hopper.py --only dense --no-peers --exp-emu 1,2 --out $OUT/dense 2>&1 | tail -1
timeout 200 python benchmarks/hopper.py --only sparse --no-peers --exp-emu 1,2 --out $OUT/sparse 2>&1 | tail -1
python - <<'PY'
import json, os
for part in ("dense", "sparse"):
    rows = json.load(open(os.path.join(os.environ["OUT"], part, "hopper.json")))["rows"]
    ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
    for case in dict.fromkeys(r["case"] for r in rows):
        for p in ("fwd", "fwd+bwd"):
            base = ms.get((case, "ours", p))
            if not base: continue
            cells = [f"{base['ms']:.3f}"]
            for e in ("ours-e1", "ours-e2"):
                r = ms.get((case, e, p))
                cells.append(f"{e} {r['ms']:.3f} ({base['ms'] / r['ms']:.3f}x) {r.get('note', '')[:60]}" if r else f"{e} -")
            print(f"{case:45s} {p:8s}", " | ".join(cells))
PY
