#!/usr/bin/env bash
# run41 call 11: the dK/dV kernel's two loops (HOPPER_BWD_SPLIT_LOOPS=True) against the one loop on
# the non-causal dense cases, whose tables have no masked steps: call 10's profile put the one
# loop's largest in-loop stall on a spilled word reloaded at the top of each step, which the split's
# full-step loop does not reload. 5 rounds.
#   OUT=DIR bash benchmarks/results/h200-hopper/run41-stop59/gpu11.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run41-ab && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
timeout ${ALIMIT:-300} python benchmarks/hopper.py --no-peers --rounds 5 --heat 1 --only dense \
  --cases 'dense N=16384 d=128;dense N=4096 d=128;dense N=16384 d=64;dense N=4096 d=64' \
  --set HOPPER_BWD_SPLIT_LOOPS=True --out $R/ab > $R/ab.log 2>&1
echo "rc=$?"
python -m benchmarks.ab_table $R/ab/hopper.json | tee $R/ab_table.txt
