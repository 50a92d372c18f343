#!/usr/bin/env bash
# run41 call 2: the softcap's forward exponentials, a quarter on the FMA pipe (stop 52's
# HOPPER_SOFTCAP_EXP2_FMA=4, no gain in run35's two samples), and the one dK/dV loop, against the
# default (the split loops since stop 58), 16K causal d=128 dense and local, time with ÷ without.
#   OUT=DIR bash benchmarks/results/h200-hopper/run41-stop59/gpu2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run41-v && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
timeout ${VLIMIT:-280} python benchmarks/parity.py --variants --rounds 5 --out $R/variants \
  --only 'softcap=30 folded$;softcap=30 folded, exp2 quarter on FMA$;softcap=30 folded, one loop$' \
  > $R/variants.log 2>&1
grep -E 'overhead|ratio' $R/variants.log | cut -c1-220 | tail -20
