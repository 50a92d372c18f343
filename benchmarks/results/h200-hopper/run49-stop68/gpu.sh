#!/usr/bin/env bash
# stop 68: the softcap's tanh as a polynomial on the FMA pipe in the Hopper forward's full steps
# (launch.HOPPER_SOFTCAP_POLY, kernels/hopper.py _softcap_poly: a vote and a warp-uniform branch
# per 16 scores of a thread, the tanh where any lane's score is beyond the range), and the dK/dV
# kernel's softcap factor taken into P^T before dV's product (launch.HOPPER_BWD_CAP_EARLY).
#   PART=poly: their GPU tests (the polynomial against the float64 oracle on the fixed shift's
#     extreme cases, its out-of-range branch bit for bit the default's, the early factor bit for
#     bit), then parity.py --variants (16K causal d=128): none, softcap 30 folded (the default)
#     and its polynomial variants, 3 rounds.
#     (Call 1 ran PART=poly on tree c957155; the polynomial was then removed as slower:
#     softcap-poly-removed.patch here puts it back with its tests and parity variants.)
#   PART=early: the factor early as the default (HOPPER_BWD_CAP_EARLY=None): its bit-identity
#     tests and the softcap oracle tests under it, then parity.py --variants (16K causal) at
#     d=128 (5 rounds) and d=64 (3 rounds): none, softcap 30 and 50 folded (the default, early)
#     and "dK/dV cap late" (the order before).
#   OUT=DIR PART=poly|early bash benchmarks/results/h200-hopper/run49-stop68/gpu.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
case "${PART:-poly}" in
  poly)
    timeout ${TLIMIT:-200} python -m pytest -v -p no:cacheprovider tests/test_hopper.py \
      -k 'polynomial or softcap_factor_early' > $OUT/test_poly.log 2>&1
    echo "poly tests rc=$?"; grep -E "FAILED|ERROR|Error" $OUT/test_poly.log | cut -c1-200 | head -20; tail -1 $OUT/test_poly.log
    timeout ${PLIMIT:-330} python benchmarks/parity.py --variants --rounds 3 --head-dim 128 \
      --only 'none$;softcap=30 folded$;softcap=30 folded, tanh poly4$;softcap=30 folded, tanh poly6$;softcap=30 folded, tanh poly4 exp in$;softcap=30 folded, tanh poly6 exp in$;softcap=30 folded, dK/dV cap early$;softcap=30 folded, tanh poly4, dK/dV cap early$' \
      --out $OUT/poly > $OUT/poly.log 2>&1
    echo "poly rc=$?"; grep -E '"pass": "overhead' $OUT/poly.log | cut -c1-220 ;;
  early)
    timeout ${TLIMIT:-200} python -m pytest -v -p no:cacheprovider tests/test_hopper.py \
      -k 'softcap_factor_early or (split_loops_are_bit_identical and softcap) or softcap_and_alibi_match_the_oracle or (fixed_shift_matches_the_oracle and mufu)' \
      > $OUT/test_early.log 2>&1
    echo "early tests rc=$?"; grep -E "FAILED|ERROR|Error" $OUT/test_early.log | cut -c1-200 | head -20; tail -1 $OUT/test_early.log
    for d in ${DLIST:-128 64}; do
      r=$( [ $d = 128 ] && echo 5 || echo 3 )
      timeout ${PLIMIT:-170} python benchmarks/parity.py --variants --rounds $r --head-dim $d \
        --only 'none$;softcap=30 folded$;softcap=30 folded, dK/dV cap late$;softcap=50 folded$;softcap=50 folded, dK/dV cap late$' \
        --out $OUT/early$d > $OUT/early$d.log 2>&1
      echo "early$d rc=$?"; grep -E '"pass": "overhead' $OUT/early$d.log | cut -c1-200
    done ;;
esac
