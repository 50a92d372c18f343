#!/usr/bin/env bash
# run12 call 8: issue 11's costs with this stop's forward (parity.py: dropout 0.1, softcap 30,
# ALiBi against off, 16K d=128 causal, beside FA2's own dropout overhead), one run.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 320 python benchmarks/parity.py --out $OUT/parity > $OUT/parity.log 2>&1
grep -E "overhead|FA2|fa2" $OUT/parity.log | head -40
tail -n 3 $OUT/parity.log
rm -f $OUT/parity/*.png
