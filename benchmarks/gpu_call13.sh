set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O=$OUT
timeout 280 python3 -m pytest -q -p no:cacheprovider $(cat benchmarks/hopper_rest_ids.txt) > $O/pytest_hopper_rest.txt 2>&1
echo "hopper rest rc=$?"; tail -3 $O/pytest_hopper_rest.txt; grep -E "^(FAILED|ERROR)" $O/pytest_hopper_rest.txt | head
timeout 280 python3 -m pytest -q -p no:cacheprovider tests/test_dynamic_layouts.py tests/test_compile_values.py -k "not (gluon_build_kernels_give or kernels_build_the_chains)" > $O/pytest_dynamic_compile.txt 2>&1
echo "dynamic+compile rc=$?"; tail -3 $O/pytest_dynamic_compile.txt; grep -E "^(FAILED|ERROR)" $O/pytest_dynamic_compile.txt | head
