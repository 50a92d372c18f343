#!/usr/bin/env bash
# run12 call 1: the forward's row sums on the tensor cores (launch.HOPPER_ROWSUM = "mma", the
# new default): the whole GPU suite in 6 shards, then hopper.py with ours ("mma") and
# ours-rowsum-alu (the fp32 sums in registers, the kernel before) in one run, no peers.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
bash benchmarks/gpu_shards.sh tests/test_hopper.py 6 250 $OUT
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
