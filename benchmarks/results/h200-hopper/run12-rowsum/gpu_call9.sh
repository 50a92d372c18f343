#!/usr/bin/env bash
# run12 call 9: FlexAttention (compiled Triton kernel, the same blocks) beside ours on the quick
# cases (dense 16K d=128 causal and not, dense 4K d=64, local(8) and bigbird 16K d=128), one run.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 270 python benchmarks/hopper.py --quick --no-peers --flex --out $OUT/flex > $OUT/flex.log 2>&1
tail -n 2 $OUT/flex.log
python - <<'PY'
import json, os
try:
    rows = json.load(open(os.path.join(os.environ["OUT"], "flex", "hopper.json")))["rows"]
except OSError as exc:
    raise SystemExit(f"missing: {exc}")
ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
for case in dict.fromkeys(r["case"] for r in rows):
    for p in ("fwd", "fwd+bwd"):
        o, f = ms.get((case, "ours", p)), ms.get((case, "flex", p))
        if o and f:
            print(f"{case:44s} {p:8s} ours {o['tflops']:.0f} flex {f['tflops']:.0f} TFLOP/s "
                  f"flex/ours time {f['ms'] / o['ms']:.2f} {f.get('note', '')[:60]}")
PY
rm -f $OUT/flex/hopper.png $OUT/flex/hopper.csv $OUT/flex/fa4_ratio.json
