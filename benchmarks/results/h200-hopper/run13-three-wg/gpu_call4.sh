#!/usr/bin/env bash
# run13 call 4: three consumers against two at d=64 with and without dropout (dropout_ab.py).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 300 python benchmarks/results/h200-hopper/run13-three-wg/dropout_ab.py 2>&1 | tail -4
