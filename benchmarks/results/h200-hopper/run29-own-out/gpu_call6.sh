#!/usr/bin/env bash
# run29 call 6: the dK/dV output copy forced on (HOPPER_BWD_OUT_TMA=True) on dense causal 16K
# d=128 (the rule keeps it off: long columns) with dropout and softcap, against the default:
#   OUT=DIR bash benchmarks/results/h200-hopper/run29-own-out/gpu_call6.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
timeout ${PLIMIT:-230} python benchmarks/results/h200-hopper/run29-own-out/opts_probe.py --out $OUT/probe \
  --layouts dense --variants default,bwd-copy --options none,dropout,softcap --rounds 4 > $OUT/probe.log 2>&1
echo "rc=$?" >> $OUT/probe.log
cp $OUT/probe/summary.txt $OUT/summary.txt 2>/dev/null
cat $OUT/summary.txt; tail -n 2 $OUT/probe.log
