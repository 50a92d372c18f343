#!/usr/bin/env bash
# device call: build GPU time, GPU tests of issues 9/10, compute-sanitizer on the Hopper kernels
export PYTHONPATH=".:${PYTHONPATH:-}"
O="$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv > $O/gpu.txt
timeout 90 python3 benchmarks/dynamic_layouts.py --suites build_gpu --out $O/build_gpu > $O/build_gpu.log 2>&1
echo "build_gpu rc=$?"; grep -o '"impl": "[^"]*", "pass": "[^"]*", "ms": [0-9.a-z]*' $O/build_gpu.log
timeout 330 python3 -m pytest -q -p no:cacheprovider tests/test_dynamic_layouts.py tests/test_compile_values.py tests/test_hopper.py > $O/pytest_gpu.txt 2>&1
echo "pytest rc=$?"; tail -3 $O/pytest_gpu.txt; grep -E "^(FAILED|ERROR)" $O/pytest_gpu.txt | head
for tool in memcheck racecheck; do
  timeout 75 compute-sanitizer --tool $tool python3 benchmarks/sanitize.py > $O/sanitizer_$tool.txt 2>&1
  echo "$tool rc=$?"; tail -4 $O/sanitizer_$tool.txt
done
