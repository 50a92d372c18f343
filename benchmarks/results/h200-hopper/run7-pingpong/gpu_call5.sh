#!/usr/bin/env bash
# Issue 10 peers under the final dK/dV rule, then the dropout ping-pong A/B.
# After the FA4 prefix of ../shared/fa4 (it puts FA4 on PYTHONPATH): OUT=DIR bash gpu_call5.sh
export PYTHONPATH=.:$PYTHONPATH
timeout 170 python benchmarks/hopper.py --only dense --skip portable --out $OUT/dense 2>&1 | tail -1
timeout 120 python benchmarks/hopper.py --only sparse --skip portable --out $OUT/sparse 2>&1 | tail -1
timeout 150 python benchmarks/parity.py --variants --only "dropout 16-bit mma" --workers 12 --out $OUT/ppvar 2>&1 | tail -1
python - <<'PY'
import csv, os
p = os.path.join(os.environ["OUT"], "ppvar/variants.csv")
if os.path.exists(p):
    for r in csv.DictReader(open(p)):
        if r["pass"] in ("fwd", "fwd+bwd") or "overhead" in r["pass"] or r["pass"] == "error":
            print(" | ".join(str(r[k])[:60] for k in ("case", "impl", "pass", "ms")))
PY
