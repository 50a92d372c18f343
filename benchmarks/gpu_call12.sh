#!/usr/bin/env bash
# device call (one H200): the reworked Gluon build (issue 9: groups as bitmask words, two lanes
# per row, lane-per-word compaction, one scan kernel). (1) the build tests on the GPU, (2)
# rows_probe.py's checks and sweep, (3) the build's GPU time with Flex beside it
# (dynamic_layouts.py --suites build_gpu), (4) the Hopper test file.
# Usage: OUT=DIR bash benchmarks/gpu_call12.sh
set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O="${OUT:?output folder}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$O/gpu.txt" 2>&1
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())' >> "$O/gpu.txt" 2>&1
timeout ${T_TESTS:-150} python3 -m pytest -q -p no:cacheprovider tests/test_dynamic_layouts.py \
  -k "gluon or kernel or tie or padded or extremes or tails" > "$O/pytest_build_kernels.txt" 2>&1
echo "pytest build kernels rc=$?"; tail -3 "$O/pytest_build_kernels.txt"; grep -E "^(FAILED|ERROR)" "$O/pytest_build_kernels.txt" | head
timeout ${T_PROBE:-150} python3 benchmarks/rows_probe.py ${PROBE_ARGS:-} --out "$O/rows" > "$O/rows.log" 2>&1
echo "rows rc=$?"; grep -E '"kind": "(time|check)"' "$O/rows.log" | cut -c1-260
timeout ${T_BENCH:-120} python3 benchmarks/dynamic_layouts.py --suites build_gpu --out "$O/build" > "$O/build.log" 2>&1
echo "build rc=$?"; grep -o '"impl": "[^"]*", "pass": "[^"]*", "ms": [0-9.a-z]*' "$O/build.log" | grep -v "kernel void"
if [ -n "${T_HOPPER:-}" ]; then
  timeout ${T_HOPPER} python3 -m pytest -q -p no:cacheprovider tests/test_hopper.py > "$O/pytest_hopper.txt" 2>&1
  echo "pytest hopper rc=$?"; tail -3 "$O/pytest_hopper.txt"; grep -E "^(FAILED|ERROR)" "$O/pytest_hopper.txt" | head
fi
