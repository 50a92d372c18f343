#!/usr/bin/env bash
# run13 call 5b (the same warm machine, right after call 5): a second sample of call 5's dense
# A/B, written to call5/dense2.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 140 python benchmarks/hopper.py --only dense --no-peers --set "HOPPER_PERSISTENT=True;HOPPER_DYNAMIC_TILES=True" --out $OUT/dense2 2>&1 | tail -1
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv $OUT/*/fa4_ratio.json
