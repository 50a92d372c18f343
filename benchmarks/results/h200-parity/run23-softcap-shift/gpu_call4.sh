#!/usr/bin/env bash
# run23 call 4: the causal dK/dV kernel's consumers at 248 registers a thread (the most beside
# the producer and writer warps' 24; launch._HOPPER_BWD_REGS["causal"] is 240), where the sm_90
# SASS of the softcap and dropout kernels has no spill stores left inside the step loop (8 and
# 11 at 240): variants without option, softcap 30 and dropout 0.1 (the default draws), each at
# 240 and 248 (d=128, 16K, H=16, causal).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
show() { grep -E "$1" $2 | python -c "
import sys, json
for l in sys.stdin:
    d = json.loads(l); print(d['case'][:26], '|', d['impl'][:46].ljust(46), d['pass'].ljust(17), d['ms'], d['note'][:90])"; }
timeout ${VLIMIT:-250} python benchmarks/parity.py --variants \
  --only 'softcap=30 folded$;none, dK/dV;softcap=30 folded, dK/dV;dropout 16-bit quad, 7 rounds' \
  --out $OUT/variants_d128 > $OUT/variants_d128.txt 2>&1
show '"pass": "(overhead|check|fwd|fwd\+bwd)"' $OUT/variants_d128.txt
grep -E '"impl": "error"|Traceback' $OUT/variants_d128.txt | cut -c1-300
