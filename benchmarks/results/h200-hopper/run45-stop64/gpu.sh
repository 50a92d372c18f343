#!/usr/bin/env bash
# stop 64.
#   PART=alibi: the causal ALiBi's row term folded into the stored lse2 (bwd.py FOLD_ROWS; the
#     Hopper dK/dV step no longer adds it: sm_90 SASS 543 / 550 -> 465 / 445 instructions a d=128
#     step), parity.py --variants, 16K causal, 5 rounds: this tree, then the tree before it (a
#     copy with fold.patch reversed) in a second process; and the dK/dV output copy forced on
#     with ALiBi (off by default at d=128 since run29, when its loops spilled). D=64: the same
#     before/after, and K/V as register operands with ALiBi.
#   PART=test: the Hopper GPU tests with ALiBi (18: the oracle tests of softcap/ALiBi and of
#     dropout's masks, the 128-query steps, K/V in registers, run30's pipeline).
#   PART=peers / PART=parity: run44-stop63/gpu.sh's (an H200, FA4 installed first).
#   OUT=DIR PART=alibi|test|peers|parity bash benchmarks/results/h200-hopper/run45-stop64/gpu.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
H=benchmarks/results/h200-hopper
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
case "${PART:-alibi}" in
  alibi)
    D=${D:-128}
    ONLY='none$;alibi column$;alibi column, dK/dV output copy$;none, dK/dV output copy$'
    # d=64: K and V as register operands with ALiBi too (off with the causal column form since
    # run26: its loops spilled; with the fold, sm_90 SASS 718 / 706 against 737 / 734 a step)
    [ $D = 64 ] && ONLY='none$;alibi column$;alibi column, K/V in registers$'
    timeout ${ALIMIT:-260} python benchmarks/parity.py --variants --rounds 5 --head-dim $D \
      --only "$ONLY" \
      --out $OUT/fold$D > $OUT/fold$D.log 2>&1
    echo "fold$D rc=$?"; grep -E '"pass": "overhead' $OUT/fold$D.log | cut -c1-200
    rm -rf /tmp/old && mkdir -p /tmp/old && cp -r sparseflash benchmarks /tmp/old/ \
      && (cd /tmp/old && { git apply -R $OLDPWD/$H/run45-stop64/fold.patch 2>/dev/null \
            || patch -s -R -p1 < $OLDPWD/$H/run45-stop64/fold.patch; }) \
      && grep -c FOLD_ROWS /tmp/old/sparseflash/kernels/bwd.py
    (cd /tmp/old && PYTHONPATH=/tmp/old timeout ${OLIMIT:-180} python benchmarks/parity.py --variants \
      --rounds 5 --head-dim $D --only 'none$;alibi column$' --out $OUT/before$D) > $OUT/before$D.log 2>&1
    echo "before$D rc=$?"; grep -E '"pass": "overhead' $OUT/before$D.log | cut -c1-200 ;;
  test)
    # (the CPU SASS tests of the same names ran on the CPU)
    timeout ${TLIMIT:-300} python -m pytest -q -p no:cacheprovider tests/test_hopper.py -k \
      '(softcap_and_alibi_match_the_oracle or matches_the_oracle_with_its_mask or d64_128_query_steps or d64_kv_in_registers or run30_pipeline) and alibi' \
      > $OUT/test.log 2>&1
    echo "test rc=$?"; tail -3 $OUT/test.log ;;
  peers|parity)
    PART=$PART bash $H/run44-stop63/gpu.sh ;;
esac
