#!/usr/bin/env bash
# run13 call 1: the three-consumer forward (192-query tiles, launch.HOPPER_FWD_CONSUMERS; the
# default at d=64 on prefix tables). The whole GPU file in 6 shards (the new oracle and
# equality tests among them), then hopper.py's dense cases with ours (three consumers at d=64)
# and ours-HOPPER_FWD_CONSUMERS=2 (the kernel before) in one run, no peers.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
bash benchmarks/gpu_shards.sh tests/test_hopper.py 6 260 /tmp/shards
cat /tmp/shards/pytest_shard*.txt > $OUT/tests.txt
timeout 200 python benchmarks/hopper.py --only dense --no-peers --set HOPPER_FWD_CONSUMERS=2 --out $OUT/dense 2>&1 | tail -1
python - <<'PY'
import json, os
rows = json.load(open(os.path.join(os.environ["OUT"], "dense", "hopper.json")))["rows"]
ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
for case in dict.fromkeys(r["case"] for r in rows):
    for p in ("fwd", "fwd+bwd"):
        base, r = ms.get((case, "ours-HOPPER_FWD_CONSUMERS=2", p)), ms.get((case, "ours", p))
        if base and r:
            print(f"{case:32s} {p:8s} two {base['ms']:.3f} default {r['ms']:.3f} "
                  f"({base['ms'] / r['ms']:.3f}x) {r.get('tflops', 0):.0f} TFLOP/s {r.get('note', '')[:40]}")
PY
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv
