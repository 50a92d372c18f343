#!/usr/bin/env bash
# run19 call 4 (after the FA4 prefix of ../shared/fa4, which puts FA4 on PYTHONPATH, after the
# stash call): the peers run with the rescale's default (threshold 8 at d=128), dense then
# sparse, each part in one process: ours, FA4, cuDNN.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
for part in dense sparse; do
  timeout ${LIMIT:-280} python benchmarks/hopper.py --only $part --skip portable --out $OUT/$part 2>&1 | tail -2
done
rm -f $OUT/*/hopper.png
