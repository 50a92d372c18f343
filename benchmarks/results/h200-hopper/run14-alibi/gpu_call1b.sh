#!/usr/bin/env bash
# run14 call 1b (the same warm machine, right after call 1, whose A/B stopped on a missing
# argument of the metadata): the ALiBi A/B (old tree, then this one), then call 2's script.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
R=benchmarks/results/h200-hopper/run14-alibi
for tag in old new; do
  tree=$([ $tag = old ] && echo _old_tree || echo .)
  PYTHONPATH=$tree:$PYTHONPATH timeout 110 python $R/alibi_ab.py --out $OUT/ab_$tag --tag $tag 2>&1 | grep -E "overhead|check|Error" | cut -c1-200
done
bash $R/gpu_call2.sh
