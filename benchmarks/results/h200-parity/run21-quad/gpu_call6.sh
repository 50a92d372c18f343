#!/usr/bin/env bash
# run21 call 6: the portable kernels throughout (SPARSEFLASH_HOPPER=0, what GPUs other than
# Hopper run; SPARSEFLASH_HOPPER_BWD=0 too), d=128: 16-bit draws in the mma and quad mappings at 10 and 7 rounds, one process.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
SPARSEFLASH_HOPPER=0 SPARSEFLASH_HOPPER_BWD=0 timeout ${VLIMIT:-280} python benchmarks/parity.py --variants --head-dim 128 --workers 8 \
  --only 'dropout 16-bit mma$,dropout 16-bit mma, 7 rounds$,dropout 16-bit quad' --out $OUT/portable_d128 2>&1 \
  | grep -v Warning | grep -E '"(fwd|fwd\+bwd|kernel)"' | cut -c1-260
