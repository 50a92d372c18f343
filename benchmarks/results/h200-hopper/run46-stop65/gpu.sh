#!/usr/bin/env bash
# stop 65 (staged; no device time was left for it): launch.HOPPER_BWD_ALIBI_FOLD on by default,
# and with it K/V as register operands (d=64) with the causal ALiBi; the dK/dV output copy with
# ALiBi at d=128 (still off by default: its correctness test is in PART=quick); the abs ALiBi
# form in raw-score units (launch.HOPPER_FWD_ALIBI_RAW, off).
#   PART=test: the Hopper GPU tests with ALiBi (the oracle tests of softcap/ALiBi, now folded by
#     default, three cases unfolded; dropout's masks; the 128-query steps; K/V in registers;
#     run30's pipeline; the dK/dV output copy against the register stores).
#   PART=parity: the parity suite (every option's price against none, 16K causal, d=128 and 64).
#   PART=alibi: parity.py --variants, the ALiBi forms at D=128 or 64, 5 rounds, one process;
#     RAW=1: the abs form against the raw-unit one (launch.HOPPER_FWD_ALIBI_RAW).
#   PART=quick: the softcap/ALiBi oracle cases, the output copy and K/V registers with ALiBi.
#   OUT=DIR PART=test|quick|parity|alibi bash benchmarks/results/h200-hopper/run46-stop65/gpu.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
case "${PART:-test}" in
  test)
    K='(softcap_and_alibi_match_the_oracle or matches_the_oracle_with_its_mask or d64_128_query_steps or d64_kv_in_registers or run30_pipeline or output_copy_equals) and alibi'
    timeout ${TLIMIT:-330} python -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "$K" \
      > $OUT/test.log 2>&1
    echo "test rc=$?"; tail -3 $OUT/test.log ;;
  quick)
    # the new defaults' GPU tests alone: the softcap/ALiBi oracle cases, the output copy and the
    # register operands with ALiBi
    timeout ${TLIMIT:-250} python -m pytest -v -p no:cacheprovider tests/test_hopper.py \
      -k '(softcap_and_alibi_match_the_oracle or output_copy_equals or d64_kv_in_registers) and alibi' \
      > $OUT/test_quick.log 2>&1
    echo "quick rc=$?"; grep -E "PASSED|FAILED|ERROR" $OUT/test_quick.log | sed "s/.*:://" | cut -c1-90; tail -1 $OUT/test_quick.log ;;
  parity)
    timeout ${PLIMIT:-420} python benchmarks/parity.py --out $OUT/parity > $OUT/parity.log 2>&1
    echo "parity rc=$?"; grep -E '"pass": "overhead' $OUT/parity.log | cut -c1-220 ;;
  alibi)
    D=${D:-128}
    ONLY='none$;alibi column$;alibi column, unfolded rows$;alibi column, dK/dV output copy$;none, dK/dV output copy$'
    [ -n "$RAW" ] && ONLY='none$;alibi abs$;alibi abs, raw units$;alibi column$'
    [ $D = 64 ] && [ -z "$RAW" ] && ONLY='none$;alibi column$;alibi column, unfolded rows$;alibi column, K/V in shared memory$'
    timeout ${ALIMIT:-300} python benchmarks/parity.py --variants --rounds 5 --head-dim $D \
      --only "$ONLY" --out $OUT/alibi$D > $OUT/alibi$D.log 2>&1
    echo "alibi$D rc=$?"; grep -E '"pass": "overhead' $OUT/alibi$D.log | cut -c1-200 ;;
esac
