#!/usr/bin/env bash
# device call: why two compile tests fail on torch 2.11, the build with the chosen knobs, GPU tests
export PYTHONPATH=".:${PYTHONPATH:-}"
O="$OUT"
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())' > $O/gpu.txt
timeout 100 python3 -m pytest -q --tb=long -p no:cacheprovider tests/test_compile_values.py -k "without_text_form or one_graph" > $O/pytest_compile_fail.txt 2>&1
echo "compile-fail rc=$?"; tail -3 $O/pytest_compile_fail.txt; grep -E "^E " $O/pytest_compile_fail.txt | head -20
timeout 70 python3 benchmarks/dynamic_layouts.py --suites build_gpu --out $O/build > $O/build.log 2>&1
echo "build rc=$?"; grep -o '"impl": "[^"]*", "pass": "[^"]*", "ms": [0-9.a-z]*' $O/build.log | sed 's/"impl": //; s/"pass": "build", "ms"://'
timeout 230 python3 -m pytest -q -rf --tb=short -p no:cacheprovider tests/test_hopper.py tests/test_dynamic_layouts.py > $O/pytest_gpu.txt 2>&1
echo "pytest rc=$?"; tail -2 $O/pytest_gpu.txt; grep -E "^(FAILED|ERROR)" $O/pytest_gpu.txt | cut -c1-250 | head
timeout 110 python3 -m pytest -q -rf --tb=short -p no:cacheprovider tests/test_compile_values.py -k "gpu or export or per_batch or scores_topk" > $O/pytest_gpu2.txt 2>&1
echo "pytest2 rc=$?"; tail -2 $O/pytest_gpu2.txt; grep -E "^(FAILED|ERROR)" $O/pytest_gpu2.txt | cut -c1-250 | head
