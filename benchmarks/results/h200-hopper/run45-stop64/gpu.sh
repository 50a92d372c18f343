#!/usr/bin/env bash
# stop 64.
#   PART=test: the Hopper GPU tests with ALiBi (the oracle tests of softcap/ALiBi, three of them
#     with launch.HOPPER_BWD_ALIBI_FOLD on, and of dropout's masks; the 128-query steps; K/V in
#     registers; run30's pipeline), then those but the oracle ones again with the fold on
#     (SPARSEFLASH_HOPPER_BWD_ALIBI_FOLD=1).
#   PART=alibi: the causal ALiBi's row term folded into the stored lse2 (bwd.py FOLD_ROWS; the
#     Hopper dK/dV step no longer adds it: sm_90 SASS 543 / 550 -> 465 / 445 instructions a d=128
#     step) against the default, and with the dK/dV output copy forced on (off with ALiBi at
#     d=128 since run29, when its loops spilled); D=64: with K/V as register operands too.
#     parity.py --variants, 16K causal, 5 rounds, one process.
#   PART=peers / PART=parity: run44-stop63/gpu.sh's (an H200, FA4 installed first for peers).
#   PART=quick: the three folded oracle cases alone.
#   OUT=DIR PART=test|quick|alibi|peers|parity bash benchmarks/results/h200-hopper/run45-stop64/gpu.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
H=benchmarks/results/h200-hopper
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
case "${PART:-alibi}" in
  alibi)
    D=${D:-128}
    ONLY='none$;alibi column$;alibi column, folded rows$;alibi column, folded rows, dK/dV output copy$;none, dK/dV output copy$'
    [ $D = 64 ] && ONLY='none$;alibi column$;alibi column, folded rows$;alibi column, folded rows, K/V in registers$'
    timeout ${ALIMIT:-300} python benchmarks/parity.py --variants --rounds 5 --head-dim $D \
      --only "$ONLY" --out $OUT/fold$D > $OUT/fold$D.log 2>&1
    echo "fold$D rc=$?"; grep -E '"pass": "overhead' $OUT/fold$D.log | cut -c1-200 ;;
  test)
    K='(softcap_and_alibi_match_the_oracle or matches_the_oracle_with_its_mask or d64_128_query_steps or d64_kv_in_registers or run30_pipeline) and alibi'
    # (the CPU SASS tests of the same names ran on the CPU)
    timeout ${TLIMIT:-300} python -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "$K" \
      > $OUT/test.log 2>&1
    echo "test rc=$?"; tail -3 $OUT/test.log
    SPARSEFLASH_HOPPER_BWD_ALIBI_FOLD=1 timeout ${FLIMIT:-200} python -m pytest -q -p no:cacheprovider \
      tests/test_hopper.py -k "($K) and not softcap_and_alibi_match_the_oracle and not run30" > $OUT/test_folded.log 2>&1
    echo "test folded rc=$?"; tail -3 $OUT/test_folded.log ;;
  quick)
    # the folded rows' oracle cases alone (the three *-folded MOD_CASES), for a short call
    timeout ${TLIMIT:-200} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
      -k 'softcap_and_alibi_match_the_oracle and folded' > $OUT/test_quick.log 2>&1
    echo "quick rc=$?"; tail -3 $OUT/test_quick.log ;;
  peers|parity)
    PART=$PART bash $H/run44-stop63/gpu.sh ;;
esac
