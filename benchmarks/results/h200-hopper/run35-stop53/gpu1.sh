#!/usr/bin/env bash
# Stop 53, call 1 (200-300 s estimated; limit 560 s), staged: parity.py's variants, d=128, 16K, H=16, causal, bf16:
# dropout's draws made early (HOPPER_DROPOUT_FORM=7, 16- and 8-bit quad) against form 3 (the
# default) at the same width, and the softcap's exponentials a quarter / a half on the FMA pipe
# (HOPPER_SOFTCAP_EXP2_FMA, stop 52) against the default, caps 30 and 50.
#   OUT=DIR bash benchmarks/results/h200-hopper/run35-stop53/gpu1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
git log --oneline -1 2>/dev/null; git status --short 2>/dev/null | head -5
timeout ${PLIMIT:-560} python benchmarks/parity.py --variants \
  --only 'dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, early;dropout 8-bit quad, 7 rounds$;dropout 8-bit quad, 7 rounds, early;softcap=30 folded$;softcap=30 folded, exp2;softcap=50 folded$;softcap=50 folded, exp2' \
  --out $OUT/variants 2>&1 | grep -E '"pass": "(overhead|fwd|fwd\+bwd)' | cut -c1-260
