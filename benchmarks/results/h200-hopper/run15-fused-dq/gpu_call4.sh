#!/usr/bin/env bash
# run15 call 4 (after the FA4 prefix of ../shared/fa4, which puts FA4 on PYTHONPATH): the dense
# peers with the fused dQ on by default; call 5 the sparse ones on the same warm machine.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout ${LIMIT:-280} python benchmarks/hopper.py --only ${PART:-dense} --skip portable --out $OUT/${PART:-dense} 2>&1 | tail -3
rm -f $OUT/*/hopper.png
