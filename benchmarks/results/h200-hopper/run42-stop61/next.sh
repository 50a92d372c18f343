#!/usr/bin/env bash
# Staged for the next stop (stop 61 ran out of device time before these):
# PART=parity: parity.py's default suite with HOPPER_DROPOUT_FORM 19 the default (dropout,
#   softcap, ALiBi and FA2's own dropout, 16K causal d=128), meant for an H200: the issue-11
#   numbers of the current kernels (stop 61's were H100 variants runs of dropout alone).
# For the forward's L2 profile and the peers, see ../run41-stop59/next.sh (PART=1, dense, sparse).
#   OUT=DIR PART=parity bash benchmarks/results/h200-hopper/run42-stop61/next.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run43-${PART:-parity} && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
case "${PART:-parity}" in
  parity)
    timeout ${PLIMIT:-420} python benchmarks/parity.py --out $R/parity > $R/parity.log 2>&1
    echo "parity rc=$?"; grep -E '"pass": "overhead' $R/parity.log | cut -c1-220 ;;
esac
