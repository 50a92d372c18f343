#!/usr/bin/env bash
# device call: the new build kernels' GPU time and knob sweep, the GPU tests, the racecheck probe
export PYTHONPATH=".:${PYTHONPATH:-}"
O="$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv > $O/gpu.txt
timeout 150 python3 benchmarks/dynamic_layouts.py --suites build_gpu,build_tiles --out $O/build > $O/build.log 2>&1
echo "build rc=$?"; grep -o '"impl": "[^"]*", "pass": "[^"]*", "ms": [0-9.a-z]*' $O/build.log | sed 's/"impl": //; s/"pass": "build", "ms"://'
timeout 60 compute-sanitizer --tool racecheck python3 benchmarks/sanitize_ws_probe.py > $O/sanitizer_ws_probe.txt 2>&1
echo "probe rc=$?"; tail -4 $O/sanitizer_ws_probe.txt
timeout 330 python3 -m pytest -q -rf --tb=short -p no:cacheprovider tests/test_compile_values.py tests/test_hopper.py tests/test_dynamic_layouts.py > $O/pytest_gpu.txt 2>&1
echo "pytest rc=$?"; tail -3 $O/pytest_gpu.txt; grep -E "^(FAILED|ERROR)" $O/pytest_gpu.txt | cut -c1-250 | head
