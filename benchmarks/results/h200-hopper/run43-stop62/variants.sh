#!/usr/bin/env bash
# stop 62: the softcap's forward with a quarter of its exponentials on the FMA pipe
# (launch.HOPPER_SOFTCAP_EXP2_FMA=4) against none, caps 30 and 50, 16K causal d=128, 5 rounds.
#   OUT=DIR bash benchmarks/results/h200-hopper/run43-stop62/variants.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
timeout ${VLIMIT:-400} python benchmarks/parity.py --variants --rounds 5 --head-dim 128 \
  --only 'none$;softcap=30 folded$;softcap=30 folded, exp2 quarter on FMA$;softcap=50 folded$;softcap=50 folded, exp2 quarter on FMA$' \
  --out $OUT/variants128 > $OUT/variants128.log 2>&1
echo "variants rc=$?"; grep -E '"pass": "overhead' $OUT/variants128.log | cut -c1-200
