#!/usr/bin/env bash
# OUT=DIR bash benchmarks/results/h200-hopper/run7-pingpong/gpu_call4.sh  (repository root, H200)
export PYTHONPATH=.
(SPARSEFLASH_HOPPER_PINGPONG=1 timeout 150 python -m pytest -q tests/test_hopper.py \
    -k "(forward_matches_the_oracle and bf16) or dropout_matches" 2>&1 | tail -15) | tee $OUT/pytest_pingpong.txt
for tool in memcheck racecheck; do
  timeout 100 compute-sanitizer --tool $tool python benchmarks/sanitize.py --dropout --pingpong \
      > $OUT/sanitizer_${tool}_dropout_pingpong.txt 2>&1; echo "$tool rc=$?"; tail -3 $OUT/sanitizer_${tool}_dropout_pingpong.txt
done
timeout 150 python benchmarks/hopper.py --no-peers --pingpong --out $OUT/pp 2>&1 | tail -2
timeout 130 python benchmarks/parity.py --variants --only "ping,dropout 16-bit mma" --workers 12 --out $OUT/ppvar 2>&1 | tail -1
python - <<'PY'
import csv, os
for f in ("pp/hopper.csv", "ppvar/variants.csv"):
    p = os.path.join(os.environ["OUT"], f)
    if not os.path.exists(p):
        print("missing", f); continue
    for r in csv.DictReader(open(p)):
        if r["pass"] in ("fwd", "fwd+bwd") or "overhead" in r["pass"] or r["pass"] == "error":
            print(" | ".join(str(r[k])[:60] for k in ("case", "impl", "pass", "ms", "tflops")))
PY
