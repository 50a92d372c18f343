#!/usr/bin/env bash
# run12 call 2: call 1 found the row-sum product wrong (d=128) and faulting (d=64) with the
# ones tile stored [128, 8] and read N-major (no swizzle); now stored [8, 128] keys-contiguous
# and read transposed like the K tiles. Two oracle tests first; on a pass, call 1's script.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 120 python -m pytest -q -x -p no:cacheprovider \
  "tests/test_hopper.py::test_hopper_forward_matches_the_oracle[local-global-causal-1000-bf16]" \
  "tests/test_hopper.py::test_hopper_forward_matches_the_oracle[bigbird-d64-bf16]" > $OUT/first.txt 2>&1
rc=$?
tail -n 3 $OUT/first.txt
if [ $rc -ne 0 ]; then grep -E "^E " $OUT/first.txt | head -8; exit 1; fi
bash benchmarks/results/h200-hopper/run12-rowsum/gpu_call1.sh
