# Issue 10 peers run, in two parts (one call each): dense then sparse cases, FA4 and cuDNN beside
# ours (default dispatch), ours-pbwd (portable dK/dV) and ours-hbwd (Hopper dK/dV forced).
# Usage: bash benchmarks/gpu_call20.sh dense|sparse  (after the FA4 prefix of ../shared/fa4)
set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O=$OUT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > $O/gpu.txt 2>&1
timeout 500 python3 benchmarks/hopper.py --only $1 --pbwd --hbwd --skip portable --out $O/$1 > $O/$1.log 2>&1
echo "$1 rc=$?"; grep -E '"fwd\+bwd"|"fwd"' $O/$1.log | cut -d, -f2,3,4,5,6 | head -80; tail -2 $O/$1.log
