# After the dK/dV dispatch change: GPU tests that go through the dispatcher's default, then the
# parity overheads (issue 11) under it.
set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O=$OUT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > $O/gpu.txt 2>&1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_distributed.py::test_split_backward_equals_one_launch tests/test_hopper.py -k "split or dispatcher or fallbacks or padding or transposed" > $O/pytest.txt 2>&1
echo "pytest rc=$?"; tail -2 $O/pytest.txt; grep -E "^(FAILED|ERROR)" $O/pytest.txt | head
timeout 330 python3 benchmarks/parity.py --out $O/parity > $O/parity.log 2>&1
echo "parity rc=$?"; grep -iE "overhead|kernel" $O/parity.log | cut -c1-220 | head -40
