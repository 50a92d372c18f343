#!/usr/bin/env bash
# Staged for the next stop (stop 57 ended with 217 s of device time, too little to start a
# machine). The GPU half of tests/test_hopper.py has not run as a whole since stop 51 (run33);
# stop 57 removed four settings (their SASS unchanged for the defaults, CPU-checked) and ran only
# the bit-identity tests it touched. PART 1 and 2: the file's GPU tests in two shards (the
# `test_hopper_` names; the CPU SASS tests compile in fresh processes and took a whole call in
# run39); PART 3: hopper.py beside FA4 and cuDNN (needs ../shared/fa4's install first, see
# docs/hopper.md), meant for an H200, whose summary (benchmarks/results/h200/fa4_ratio.json)
# dates from stop 50's kernels. Everything lands in $OUT/run.tgz.
#   OUT=DIR PART=1 bash benchmarks/results/h200-hopper/run39-stop57/next.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run40-${PART:-1} && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
case "${PART:-1}" in
  1) timeout ${TLIMIT:-560} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
       -k "test_hopper_ and (oracle or matches)" 2>&1 | tail -15 | tee $R/tests1.txt ;;
  2) timeout ${TLIMIT:-560} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
       -k "test_hopper_ and not (oracle or matches)" 2>&1 | tail -15 | tee $R/tests2.txt ;;
  3) timeout ${HLIMIT:-560} python benchmarks/hopper.py --skip portable --rounds 3 --heat 1 \
       --out $R/peers > $R/peers.log 2>&1
     tail -2 $R/peers.log | cut -c1-400 ;;
esac
