# Per-kernel breakdown: the Hopper dK/dV kernel against the portable one (the earlier --pbwd
# A/B timed the default backward twice).
set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O=$OUT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > $O/gpu.txt 2>&1
timeout 200 python3 benchmarks/bwd_breakdown.py --out $O/breakdown > $O/breakdown.log 2>&1
echo "breakdown rc=$?"; grep -E "dkdv|dq_kernel|TOTAL" $O/breakdown.log | cut -c1-120
