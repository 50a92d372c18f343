#!/usr/bin/env bash
# run12 call 5: the forward's softmax in a basic block of its own (launch.HOPPER_FWD_OVERLAP,
# kernels/hopper.py OVERLAP_PV), found from call 4's profile and the sm_90 SASS: ptxas had moved
# the wait for P_{t-1} V_{t-1} above the exponentials. The whole GPU suite in 6 shards (the new
# form is the default), then hopper.py with ours (overlap) and ours-HOPPER_FWD_OVERLAP=False
# (the kernel before) in one run, no peers.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
bash benchmarks/gpu_shards.sh tests/test_hopper.py 6 250 $OUT
for part in dense sparse; do
  timeout 150 python benchmarks/hopper.py --only $part --no-peers --set HOPPER_FWD_OVERLAP=False --out $OUT/$part 2>&1 | tail -1
done
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
            base, r = ms.get((case, "ours-HOPPER_FWD_OVERLAP=False", p)), ms.get((case, "ours", p))
            if base and r:
                print(f"{case:48s} {p:8s} before {base['ms']:.3f} overlap {r['ms']:.3f} "
                      f"({base['ms'] / r['ms']:.3f}x) {r.get('tflops', 0):.0f} TFLOP/s {r.get('note', '')[:40]}")
PY
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv
