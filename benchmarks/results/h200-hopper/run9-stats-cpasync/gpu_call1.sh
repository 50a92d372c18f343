#!/usr/bin/env bash
# run9 call 1: the packed shapes that faulted with 1-D copies (now 4-byte asynchronous copies),
# the whole GPU suite in 4 shards beside compute-sanitizer memcheck on the cp.async form, then
# the dK/dV kernel with TMA against cp.async against consumer loads (timed alone).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 60 python benchmarks/results/h200-hopper/run8-dkdv-stats/debug_packed.py 2>&1 | tee $OUT/debug_packed.txt
timeout 230 compute-sanitizer --tool memcheck python benchmarks/sanitize.py --stats cpasync > $OUT/memcheck_cpasync.txt 2>&1 &
bash benchmarks/gpu_shards.sh tests/test_hopper.py 4 230 $OUT
wait
tail -n 4 $OUT/memcheck_cpasync.txt
timeout 150 python benchmarks/bwd_breakdown.py --stats-modes cpasync,load --cases "dense,dense causal,local(8),dense d=64" --out $OUT/modes > $OUT/modes.txt 2>&1
grep -E "TOTAL|_hopper_dkdv|rel diff" $OUT/modes.txt
