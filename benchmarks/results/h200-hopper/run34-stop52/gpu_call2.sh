#!/usr/bin/env bash
# run34 (stop 52), call 2 (about 250 s): the forward with run-time tiles published in global
# slots against the shared slot (the default), timed in one process; our impls only.
#   OUT=DIR bash benchmarks/results/h200-hopper/run34-stop52/gpu_call2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
timeout ${PLIMIT:-250} python benchmarks/hopper.py --no-peers --heat 2 --set "HOPPER_TILE_SLOT='global'" \
  --cases "${CASES:-dense N=16384 d=128;dense causal N=4096;local(2) N=16384 d=128;butterfly N=16384 d=128;local(8) N=16384 d=64}" \
  --out $OUT/slot 2>&1 | grep -E '"pass": "fwd"' | cut -c1-260
