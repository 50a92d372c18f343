#!/usr/bin/env bash
# run19 call 1: the GPU oracle test of the forward's conditional rescale, then its A/B without
# peers (ours at the default HOPPER_FWD_RESCALE=0 against ours at 8, in one process per part):
# dense, then sparse. gpu_call4.sh times the default against FA4 and cuDNN.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv | tee $OUT/gpu.txt
timeout 170 python -m pytest -q tests/test_hopper.py -k "conditional_rescale_on_rows" \
  -p no:cacheprovider 2>&1 | tail -6 | tee $OUT/pytest_rescale.txt
for part in dense sparse; do
  timeout ${LIMIT:-190} python benchmarks/hopper.py --only $part --no-peers \
    --set "HOPPER_FWD_RESCALE=8.0" --out $OUT/$part 2>&1 | tail -3
done
rm -f $OUT/*/hopper.png
