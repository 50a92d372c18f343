#!/usr/bin/env bash
# run14 call 4 (the same warm machine): tests/test_hopper.py with the d=64 dQ tile 128x64.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
bash benchmarks/gpu_shards.sh tests/test_hopper.py 6 250 /tmp/shards2 | tail -15
cat /tmp/shards2/pytest_shard*.txt > $OUT/tests_dq.txt
