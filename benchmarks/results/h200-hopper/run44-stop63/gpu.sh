#!/usr/bin/env bash
# stop 63.
#   PART=rest: HOPPER_DROPOUT_FORM 51 (bit 5: dV's operand by cvt.rn.relu) against the default 19,
#     and launch._HOPPER_BWD_UNCLAMPED (the dK/dV exponent without its clamp) against the default,
#     parity.py --variants, 16K causal, d=128 (and d=64 for the clamp), 5 rounds.
#   PART=test: the GPU dropout-forms test with form 51 added (its 16-bit cases, the default draws),
#     then unclamped_probe.py (peaked softmaxes with and without the clamp).
#   PART=parity: the parity suite (meant for an H200: its option prices). The softcap variants of
#     run43-stop62/variants.sh were dropped: three samples found no gain already.
#   PART=peers: FA4 (installed first), cuDNN and FlexAttention beside ours, dense then sparse
#     (run41-stop59/next.sh's calls 5 and 6 in one call), meant for an H200.
#   OUT=DIR PART=rest|test|parity|peers bash benchmarks/results/h200-hopper/run44-stop63/gpu.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
H=benchmarks/results/h200-hopper
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
case "${PART:-rest}" in
  peers)
    for p in dense sparse; do
      OUT=$OUT/$p PART=$p HLIMIT=${HLIMIT:-280} bash $H/run41-stop59/next.sh
    done ;;
  rest)
    timeout ${DLIMIT:-200} python benchmarks/parity.py --variants --rounds 5 --head-dim 128 \
      --only 'none$;none, dK/dV unclamped$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, Hopper form 51$' \
      --out $OUT/dropout51 > $OUT/dropout51.log 2>&1
    echo "dropout51 rc=$?"; grep -E '"pass": "overhead' $OUT/dropout51.log | cut -c1-200
    timeout ${ULIMIT:-120} python benchmarks/parity.py --variants --rounds 5 --head-dim 64 \
      --only 'none$;none, dK/dV unclamped$' --out $OUT/unclamped64 > $OUT/unclamped64.log 2>&1
    echo "unclamped64 rc=$?"; grep -E '"pass": "overhead' $OUT/unclamped64.log | cut -c1-200
    ;;
  parity)
    OUT=$OUT/parity PART=parity PLIMIT=200 bash $H/run42-stop61/next.sh ;;
  test)
    timeout ${TLIMIT:-400} python -m pytest -q -x -p no:cacheprovider tests/test_hopper.py \
      -k 'dropout_forms_are_bit_identical and 16' > $OUT/test.log 2>&1
    echo "test rc=$?"; tail -3 $OUT/test.log
    timeout ${ULIMIT:-200} python benchmarks/results/h200-hopper/run44-stop63/unclamped_probe.py > $OUT/probe.log 2>&1
    echo "probe rc=$?"; tail -1 $OUT/probe.log ;;
esac
