#!/usr/bin/env bash
# run19 call 2 (after the FA4 prefix of ../shared/fa4, which puts FA4 on PYTHONPATH): the new
# GPU test of the forward's conditional rescale, then the dense peers (FA4, cuDNN, ours at the
# default (HOPPER_FWD_RESCALE=0, rescaling at every step) and ours at 8) in one process; call 3 the
# sparse ones (PART=sparse) on the same warm machine.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
if [ "${PART:-dense}" = dense ]; then
  timeout 150 python -m pytest -q -x tests/test_hopper.py -k "conditional_rescale_on_rows" \
    -p no:cacheprovider 2>&1 | tail -4 | tee $OUT/pytest_rescale.txt
fi
timeout ${LIMIT:-420} python benchmarks/hopper.py --only ${PART:-dense} --skip portable \
  --set "HOPPER_FWD_RESCALE=8.0" --out $OUT/${PART:-dense} 2>&1 | tail -3
rm -f $OUT/*/hopper.png
