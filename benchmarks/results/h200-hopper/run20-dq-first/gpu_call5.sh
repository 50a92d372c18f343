#!/usr/bin/env bash
# run20 call 5, as it ran (after the FA4 stash call, with the FA4 prefix): the GPU tests of the
# new dQ conversion kernel (bitwise against torch on the GPU) and three fused-backward oracle
# tests, then the peers run of the sparse cases (ours, FA4), one process. The dense part and
# the whole fused_tests.txt were planned too but did not fit the device time left (236 s).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 70 python -m pytest -q -p no:cacheprovider tests/test_hopper.py::test_fused_dq_conversion_kernel \
  "tests/test_hopper.py::test_hopper_backward_with_and_without_the_fused_dq[gqa-fused-dq]" \
  "tests/test_hopper.py::test_hopper_backward_with_and_without_the_fused_dq[packed-one-token-docs-fused-dq]" \
  "tests/test_hopper.py::test_hopper_dkdv_statistics_modes_match_the_oracle[default-d128-130-300]" \
  2>&1 | tail -3 > $OUT/tests.txt
cat $OUT/tests.txt
timeout 150 python benchmarks/hopper.py --only sparse --skip portable --out $OUT/sparse 2>&1 | tail -1
rm -f $OUT/*/hopper.png
