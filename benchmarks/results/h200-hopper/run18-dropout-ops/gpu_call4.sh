#!/usr/bin/env bash
# run18 call 4: the four tests call 2/3 failed on the GPU host (they made CPU tensors for the
# portable kernels, which run there only interpreted; a table compare included the capacity
# tail the CUDA build kernels leave unwritten), then the parity suite (dropout, softcap, ALiBi
# against none and FA2's dropout, one run) on the final tree.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_hopper.py tests/test_dynamic_layouts.py -k "fused_dq_dispatch or statistics_alone or compiled_builder_gives" > $OUT/pytest.txt 2>&1; tail -3 $OUT/pytest.txt
timeout 330 python benchmarks/parity.py --out $OUT/parity > $OUT/parity.log 2>&1
grep -E "overhead" $OUT/parity.log | cut -c1-220 | head -24; tail -1 $OUT/parity.log | cut -c1-200
