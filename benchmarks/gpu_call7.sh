#!/usr/bin/env bash
# device call: the build kernels' tests on the GPU (both top-k round variants, poisoned
# capacity tails), the packed-key rounds swept against the (max, index) pairs with the
# unzeroed capacity tails, and test_compile_values on the device's torch (2.11)
export PYTHONPATH=".:${PYTHONPATH:-}"
O="$OUT"
timeout 45 python3 -m pytest -q -p no:cacheprovider -k 'kernel or tie or padded or extremes or tails' tests/test_dynamic_layouts.py > $O/pytest_kernels.txt 2>&1
echo "pytest kernels rc=$?"; tail -1 $O/pytest_kernels.txt
timeout 95 python3 benchmarks/dynamic_layouts.py --suites build_tiles,build_gpu --out $O/build > $O/build.log 2>&1
echo "build rc=$?"; grep -o '"impl": "[^"]*", "pass": "[^"]*", "ms": [0-9.a-z]*' $O/build.log | sed 's/"impl": //; s/"pass": "build", "ms"://' | grep -v "kernel void"
timeout 50 python3 -m pytest -q -p no:cacheprovider tests/test_compile_values.py tests/test_attention.py -k 'compile or export or graph or serial or layout or sync' > $O/pytest_compile_values.txt 2>&1
echo "pytest compile_values rc=$?"; tail -3 $O/pytest_compile_values.txt
