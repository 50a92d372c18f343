# Fused dQ in the Hopper dK/dV kernel: A/B timing against the dQ kernel, then the GPU tests.
set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O=$OUT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > $O/gpu.txt 2>&1
timeout 250 python3 benchmarks/hopper.py --quick --no-peers --nofuse --dq-parts 128:1,128:4 --out $O/ab > $O/ab.log 2>&1
echo "ab rc=$?"; grep -E "^\| |fwd\+bwd" $O/ab.log | head -40; tail -5 $O/ab.log
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "fused or lse_gradient or dq_kernel or (forward_matches and bf16) or padding or per_batch" tests/test_distributed.py::test_split_backward_equals_one_launch > $O/pytest_fused.txt 2>&1
echo "pytest rc=$?"; tail -3 $O/pytest_fused.txt; grep -E "^(FAILED|ERROR)|Error" $O/pytest_fused.txt | head -20
