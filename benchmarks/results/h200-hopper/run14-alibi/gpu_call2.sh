#!/usr/bin/env bash
# run14 call 2 (after the FA4 prefix of ../shared/fa4, which puts FA4 on PYTHONPATH): the dense
# peers run with this stop's defaults (three consumers at d=64 now persistent with run-time
# tiles; not re-measured against FA4 since run13 call 3), then the ALiBi A/B: alibi_ab.py once
# with the tree before the ALiBi split (_old_tree = `git archive dbf1d42 sparseflash`) and once
# with this tree, one machine, back to back.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout 260 python benchmarks/hopper.py --only dense --skip portable --out $OUT/dense 2>&1 | tail -1
R=benchmarks/results/h200-hopper/run14-alibi
for tag in old new; do
  tree=$([ $tag = old ] && echo _old_tree || echo .)
  PYTHONPATH=$tree:$PYTHONPATH timeout 150 python $R/alibi_ab.py --out $OUT/ab_$tag --tag $tag 2>&1 | grep -E "overhead|check|Error" | cut -c1-200
done
rm -f $OUT/*/hopper.png $OUT/*/hopper.csv
