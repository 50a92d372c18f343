#!/usr/bin/env bash
# run10 call 2: softcap and ALiBi with the Hopper forward's exponentials one in 4 by the
# polynomial (parity.py --variants: "softcap=30 folded, poly exp", "alibi column, poly exp"),
# beside the defaults, in one process.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 500 python benchmarks/parity.py --variants --only softcap,alibi --out $OUT/variants > $OUT/variants.log 2>&1
python - <<'PY'
import csv, os
p = os.path.join(os.environ["OUT"], "variants/variants.csv")
for r in csv.DictReader(open(p)):
    if r["pass"] in ("fwd", "fwd+bwd", "overhead fwd", "overhead fwd+bwd", "check"):
        print(" | ".join(str(r[k])[:70] for k in ("case", "impl", "pass", "ms", "note")))
PY
tail -n 3 $OUT/variants.log
