#!/usr/bin/env bash
# device call (one H200): the Gluon build kernels (issue 9). (1) the build tests on the GPU
# (Gluon kernels forced on and by default, the tl kernels, compile tests), (2) the build's
# GPU time with Flex beside it (dynamic_layouts.py --suites build_gpu), (3) rows_probe.py's
# sweep without its checks. Usage: OUT=DIR bash benchmarks/gpu_call11.sh
set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O="${OUT:?output folder}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$O/gpu.txt" 2>&1
timeout ${T_TESTS:-150} python3 -m pytest -q -p no:cacheprovider tests/test_dynamic_layouts.py \
  -k "gluon or kernel or tie or padded or extremes or tails" > "$O/pytest_build_kernels.txt" 2>&1
echo "pytest build kernels rc=$?"; tail -3 "$O/pytest_build_kernels.txt"
timeout ${T_BENCH:-150} python3 benchmarks/dynamic_layouts.py --suites build_gpu --out "$O/build" > "$O/build.log" 2>&1
echo "build rc=$?"; grep -o '"impl": "[^"]*", "pass": "[^"]*", "ms": [0-9.a-z]*' "$O/build.log" | grep -v "kernel void"
timeout ${T_PROBE:-120} python3 benchmarks/rows_probe.py --skip-check --out "$O/rows" > "$O/rows.log" 2>&1
echo "rows rc=$?"; grep '"kind": "time"' "$O/rows.log" | cut -c1-200
