#!/usr/bin/env bash
# device call: the row kernel's gather refresh against the reload, swept; the kernel tests with gather forced
export PYTHONPATH=".:${PYTHONPATH:-}"
O="$OUT"
timeout 150 python3 benchmarks/dynamic_layouts.py --suites build_tiles,build_gpu --out $O/build > $O/build.log 2>&1
echo "build rc=$?"; grep -o '"impl": "[^"]*", "pass": "[^"]*", "ms": [0-9.a-z]*' $O/build.log | sed 's/"impl": //; s/"pass": "build", "ms"://' | grep -v "kernel void"
timeout 120 python3 -c 'import sys, pytest; import sparseflash.dynamic as D; D._ROW_GATHER = True; sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-k", "kernel or tie or padded", "tests/test_dynamic_layouts.py"]))' > $O/pytest_gather.txt 2>&1
echo "pytest gather rc=$?"; tail -2 $O/pytest_gather.txt
