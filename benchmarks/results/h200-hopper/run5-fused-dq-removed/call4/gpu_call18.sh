# Fused dQ (both warpgroups' dS^T; products deferred beside the next step's or not): GPU tests,
# A/B against the dQ kernel, per-kernel breakdown.
set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O=$OUT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > $O/gpu.txt 2>&1
timeout 250 python3 -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "fused or lse_gradient or dq_kernel or (forward_matches and bf16) or padding or per_batch or transposed" tests/test_distributed.py::test_split_backward_equals_one_launch > $O/pytest_fused.txt 2>&1
echo "pytest rc=$?"; tail -2 $O/pytest_fused.txt; grep -E "^(FAILED|ERROR)" $O/pytest_fused.txt | head -20
timeout 200 python3 benchmarks/hopper.py --quick --no-peers --nofuse --nodefer --out $O/ab > $O/ab.log 2>&1
echo "ab rc=$?"; grep -E "fwd\+bwd" $O/ab.log | cut -d, -f2,3,5,9 | head -40
timeout 120 python3 benchmarks/bwd_breakdown.py --out $O/breakdown > $O/breakdown.log 2>&1
echo "breakdown rc=$?"; grep -v "^\s*$" $O/breakdown.log | cut -c1-120 | head -70
