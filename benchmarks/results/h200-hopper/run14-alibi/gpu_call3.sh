#!/usr/bin/env bash
# run14 call 3: the GPU tests of the Hopper kernels and of issue 11's options (the ALiBi split
# touches the Hopper forward, the portable forward and the dQ kernel), in 6 shards; then a
# second ALiBi A/B sample in the other order (new, then old).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
bash benchmarks/gpu_shards.sh "tests/test_hopper.py tests/test_parity.py" 6 280 /tmp/shards
cat /tmp/shards/pytest_shard*.txt > $OUT/tests.txt
R=benchmarks/results/h200-hopper/run14-alibi
for tag in new old; do
  tree=$([ $tag = old ] && echo _old_tree || echo .)
  PYTHONPATH=$tree:$PYTHONPATH timeout 150 python $R/alibi_ab.py --out $OUT/ab2_$tag --tag $tag 2>&1 | grep -E "overhead|check|Error" | cut -c1-200
done
