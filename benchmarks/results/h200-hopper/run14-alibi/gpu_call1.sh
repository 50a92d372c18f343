#!/usr/bin/env bash
# run14 call 1: the GPU tests of the Hopper kernels and of issue 11's options (the ALiBi split
# touches the Hopper forward, the portable forward and the dQ kernel; the dQ kernel's tile now
# comes from launch._HOPPER_DQ_TABLE beside the Gluon dK/dV), in 6 shards; then the ALiBi A/B:
# alibi_ab.py with the tree before the split (_old_tree = `git archive dbf1d42 sparseflash`)
# and with this tree, back to back on one machine.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
bash benchmarks/gpu_shards.sh "tests/test_hopper.py tests/test_parity.py" 6 280 /tmp/shards
cat /tmp/shards/pytest_shard*.txt > $OUT/tests.txt
R=benchmarks/results/h200-hopper/run14-alibi
for tag in old new; do
  tree=$([ $tag = old ] && echo _old_tree || echo .)
  PYTHONPATH=$tree:$PYTHONPATH timeout 130 python $R/alibi_ab.py --out $OUT/ab_$tag --tag $tag 2>&1 | grep -E "overhead|check|Error" | cut -c1-200
done
