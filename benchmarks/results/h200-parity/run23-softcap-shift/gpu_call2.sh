#!/usr/bin/env bash
# run23 call 2: at d=64 call 1 had the fixed shift slower on the dense forward (the launch
# keeps d=64's softmax in the products' basic block, HOPPER_FWD_OVERLAP None): the d=64
# variants again with the softmax in its own block, with and without softcap; then the parity
# suite (d=128, the issue's table) on this tree.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
show() { grep -E "$1" $2 | python -c "
import sys, json
for l in sys.stdin:
    d = json.loads(l); print(d['case'][:26], '|', d['impl'][:34].ljust(34), d['pass'].ljust(17), d['ms'], d['note'][:90])"; }
timeout ${VLIMIT:-170} python benchmarks/parity.py --variants --only "softcap=30 folded;none, overlap" \
  --head-dim 64 --out $OUT/variants_d64 > $OUT/variants_d64.txt 2>&1
show '"pass": "(overhead|kernel|fwd|fwd\+bwd)"' $OUT/variants_d64.txt
timeout ${PLIMIT:-260} python benchmarks/parity.py --out $OUT/parity > $OUT/parity.txt 2>&1
show '"pass": "(overhead|kernel)' $OUT/parity.txt
grep -E '"impl": "error"|Traceback' $OUT/parity.txt $OUT/variants_d64.txt | cut -c1-300
