#!/usr/bin/env bash
# stop 66: the abs ALiBi form split by the diagonal's sides in the Hopper forward
# (launch.HOPPER_FWD_ALIBI_SIDES, kernels/hopper.py HAS_ALIBI 4; off until this has run), beside
# stop 65's staged work (run46-stop65/gpu.sh: the raw-unit form, the dK/dV output copy with ALiBi).
#   PART=quick: the softcap/ALiBi oracle cases (with the *-sides and *-raw ones), the dK/dV
#     output copy and K/V registers with ALiBi (run46's PART=quick).
#   PART=nc: parity.py --variants --non-causal, D=128 or 64: none, the abs form (the default for
#     non-causal calls), raw units, sides; 5 rounds, one process.
#   PART=causal: the same on causal tables (ALIBI_VARIANT "abs" forced) beside the column form.
#   PART=defaults (staged after the calls ran: the defaults they set, the split by sides and the
#     dK/dV output copy with the folded causal ALiBi at d=128): the softcap/ALiBi oracle cases,
#     the output copy's ALiBi cases and dropout's mask oracle cases with ALiBi, then parity.py --variants (causal) timing "alibi column"
#     (the copy now taken) against "alibi column, unfolded rows" (no copy).
#   OUT=DIR PART=quick|nc|causal|defaults [D=128|64] bash benchmarks/results/h200-hopper/run47-stop66/gpu.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
D=${D:-128}
case "${PART:-quick}" in
  quick)
    OUT=$OUT PART=quick TLIMIT=${TLIMIT:-280} bash benchmarks/results/h200-hopper/run46-stop65/gpu.sh ;;
  defaults)
    timeout ${TLIMIT:-230} python -m pytest -v -p no:cacheprovider tests/test_hopper.py \
      -k '(softcap_and_alibi_match_the_oracle or output_copy_equals or matches_the_oracle_with_its_mask) and alibi' \
      > $OUT/test_defaults.log 2>&1
    echo "defaults rc=$?"; grep -E "FAILED|ERROR" $OUT/test_defaults.log | cut -c1-150; tail -1 $OUT/test_defaults.log
    timeout ${ALIMIT:-200} python benchmarks/parity.py --variants --rounds 5 --head-dim $D \
      --only 'none$;alibi column$;alibi column, unfolded rows$' --out $OUT/copy$D > $OUT/copy$D.log 2>&1
    echo "copy$D rc=$?"; grep -E '"pass": "overhead' $OUT/copy$D.log | cut -c1-200 ;;
  nc|causal)
    NC=""; [ $PART = nc ] && NC=--non-causal
    ONLY='none$;alibi abs$;alibi abs, raw units$;alibi abs, sides$'
    [ $PART = causal ] && ONLY="$ONLY;alibi column\$"
    timeout ${ALIMIT:-250} python benchmarks/parity.py --variants $NC --rounds 5 --head-dim $D \
      --only "$ONLY" --out $OUT/$PART$D > $OUT/$PART$D.log 2>&1
    echo "$PART$D rc=$?"; grep -E '"pass": "overhead' $OUT/$PART$D.log | cut -c1-200 ;;
esac
