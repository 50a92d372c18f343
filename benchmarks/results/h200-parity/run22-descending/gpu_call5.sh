#!/usr/bin/env bash
# run22 call 5 (same script as call 4, after the heat phase was added to time_jobs) / call 4: parity.py now times every impl of a case interleaved (2 rounds, the second in
# reverse order, each time the mean: call 3 timed the table and last-first walks equal in one
# process, where the variants of calls 1-2, timed one after the other, had last-first 17%
# slower). The variants of the walks and the parity suite on the new default, both so timed.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
show() { grep -E "$1" $2 | python -c "
import sys, json
for l in sys.stdin:
    d = json.loads(l); print(d['case'][:26], '|', d['impl'][:34].ljust(34), d['pass'].ljust(17), d['ms'], d['note'][:70] if 'rounds' in d['note'] else '')"; }
timeout ${VLIMIT:-170} python benchmarks/parity.py --variants --only "alibi column;none, walk" \
  --out $OUT/variants > $OUT/variants.txt 2>&1
show '"pass": "(fwd|fwd\+bwd)"' $OUT/variants.txt
timeout ${PLIMIT:-300} python benchmarks/parity.py --out $OUT/parity > $OUT/parity.txt 2>&1
show '"pass": "overhead' $OUT/parity.txt
grep -E '"impl": "error"' $OUT/parity.txt $OUT/variants.txt | cut -c1-300
