#!/usr/bin/env bash
# stop 69: the dK/dV kernel's output copy (launch.HOPPER_BWD_OUT_TMA) with the score modifiers.
# At d=128 the copy, which the launch takes on tables whose columns are short (local(8)|global
# here, not the dense table), costs the folded softcap's full-step loop 3 -> 32 local accesses
# a step in one warpgroup (sm_90 SASS, CPU), and moves dropout's 28/32/36 to 18/42/46.
#   PART=copy: the copy's GPU tests (bit for bit the register stores, also with the softcap and
#     with the tile's coordinates found again after the loops: launch._HOPPER_BWD_OUT_RELOAD), then
#     parity.py --variants (16K causal, d=128, 5 rounds): none, softcap 30 folded and
#     dropout 0.1 (the defaults), each with the copy turned off ("no dK/dV output copy") and
#     with it reloaded ("dK/dV output copy held").
#   PART=sweep: hopper.py (ours only, 3 rounds) on the peers table's cases that take the copy,
#     the default against --set HOPPER_BWD_OUT_RELOAD=False; parity.py --variants at d=64 (3
#     rounds): none, softcap 30 and dropout 0.1, each with the copy reloaded.
#   OUT=DIR PART=copy|sweep bash benchmarks/results/h200-hopper/run50-stop69/gpu.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
case "${PART:-copy}" in
  copy)
    timeout ${TLIMIT:-150} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
      -k 'output_copy_equals_register_stores' > $OUT/test_copy.log 2>&1
    echo "copy tests rc=$?"; grep -E "FAILED|ERROR|Error" $OUT/test_copy.log | cut -c1-200 | head -20; tail -1 $OUT/test_copy.log
    for d in ${DLIST:-128}; do
      timeout ${PLIMIT:-300} python benchmarks/parity.py --variants --rounds ${ROUNDS:-5} --head-dim $d \
        --only 'none$;none, no dK/dV output copy$;softcap=30 folded$;softcap=30 folded, no dK/dV output copy$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, no dK/dV output copy$;none, dK/dV output copy held$;softcap=30 folded, dK/dV output copy held$;dropout 16-bit quad, 7 rounds, dK/dV output copy held$' \
        --out $OUT/copy$d > $OUT/copy$d.log 2>&1
      echo "copy$d rc=$?"; grep -E '"pass": "overhead' $OUT/copy$d.log | cut -c1-200
    done ;;
  ab)
    # after the fix: the copy's GPU tests, then the held copy (the form before) against the
    # reloaded one (the default) and the register stores at d=128, then the sweep
    timeout ${TLIMIT:-170} python -m pytest -q -p no:cacheprovider tests/test_hopper.py \
      -k 'output_copy_equals_register_stores' > $OUT/test_copy.log 2>&1
    echo "copy tests rc=$?"; grep -E "FAILED|ERROR|Error" $OUT/test_copy.log | cut -c1-200 | head -20; tail -1 $OUT/test_copy.log
    timeout ${PLIMIT:-200} python benchmarks/parity.py --variants --rounds ${ROUNDS:-5} --head-dim 128 \
      --only 'none$;none, no dK/dV output copy$;none, dK/dV output copy held$;softcap=30 folded$;softcap=30 folded, no dK/dV output copy$;softcap=30 folded, dK/dV output copy held$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, no dK/dV output copy$;dropout 16-bit quad, 7 rounds, dK/dV output copy held$' \
      --out $OUT/ab128 > $OUT/ab128.log 2>&1
    echo "ab128 rc=$?"; grep -E '"pass": "overhead' $OUT/ab128.log | cut -c1-200
    timeout ${HLIMIT:-200} python benchmarks/hopper.py --no-peers --rounds 3 --heat 1 \
      --cases 'dense causal N=4096;local;butterfly;bigbird;strided' \
      --set HOPPER_BWD_OUT_RELOAD=False --set HOPPER_BWD_OUT_TMA=False --out $OUT/sweep > $OUT/sweep.log 2>&1
    echo "sweep rc=$?"; tail -1 $OUT/sweep.log | cut -c1-300 ;;
  sweep)
    # the reloaded copy against the default on the peers table's cases that take the copy (its
    # sparse cases and dense causal 4K; ours only), then parity.py's variants at d=64
    timeout ${HLIMIT:-300} python benchmarks/hopper.py --no-peers --rounds 3 --heat 1 \
      --cases 'dense causal N=4096;local;butterfly;bigbird;strided' \
      --set HOPPER_BWD_OUT_RELOAD=False --out $OUT/sweep > $OUT/sweep.log 2>&1
    echo "sweep rc=$?"; tail -2 $OUT/sweep.log | cut -c1-300
    timeout ${PLIMIT:-200} python benchmarks/parity.py --variants --rounds 3 --head-dim 64 \
      --only 'none$;none, dK/dV output copy held$;softcap=30 folded$;softcap=30 folded, dK/dV output copy held$;dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, dK/dV output copy held$' \
      --out $OUT/copy64 > $OUT/copy64.log 2>&1
    echo "copy64 rc=$?"; grep -E '"pass": "overhead' $OUT/copy64.log | cut -c1-200 ;;
esac
