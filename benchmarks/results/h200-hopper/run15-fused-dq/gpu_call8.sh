#!/usr/bin/env bash
# run15 call 8: the fused dQ with dK's product from registers (this tree) against dS^T read
# back from shared memory for it (_old_tree: b7cab22), per-kernel times, two processes each,
# alternating; then the fused-dQ GPU oracle tests of this tree.
cd "$(dirname "$0")/../../../.."
C="dense,dense causal,local(8),dense d=64"
for i in 1 2; do
  for t in old new; do
    R=.; [ $t = old ] && R=_old_tree       # the script puts its own tree first on sys.path
    PYTHONPATH=$R timeout 100 python $R/benchmarks/bwd_breakdown.py --variants "hopper fused dq" --fused --iters 10 --cases "$C" --out $OUT/$t$i > $OUT/$t$i.log 2>&1
    grep -E "_hopper_dkdv_kernel" $OUT/$t$i.log | sed "s/^/$t$i /" | cut -c1-40,120-
  done
done
PYTHONPATH=. timeout 200 python -m pytest -q -x -p no:cacheprovider tests/test_hopper.py -k "with_and_without_the_fused_dq" 2>&1 | tail -3
