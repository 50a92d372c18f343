#!/usr/bin/env bash
# run15 call 9: the fused dQ's product one step late (DQ_LAG, this tree's default where it
# fits) against every step (HOPPER_DQ_LAG=False), in one process, two samples; then the GPU
# oracle tests of the fused backward and of its options (dropout, softcap, ALiBi).
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
C="dense,dense causal,local(8),local(2),bigbird(3,2,3),dense d=64"
for i in 1 2; do
  timeout 100 python benchmarks/bwd_breakdown.py --variants "hopper fused dq,hopper fused dq, no lag" --fused --iters 10 --cases "$C" --out $OUT/ab$i > $OUT/ab$i.log 2>&1
  grep -E "_hopper_dkdv_kernel|grad rel" $OUT/ab$i.log | sed "s/^/$i /" | cut -c1-50,120-
done
timeout 240 python -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "with_and_without_the_fused_dq or dropout_matches or softcap_and_alibi_match" 2>&1 | tail -3
