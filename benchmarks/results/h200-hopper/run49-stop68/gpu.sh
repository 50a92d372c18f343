#!/usr/bin/env bash
# stop 68: the softcap's tanh as a polynomial on the FMA pipe in the Hopper forward's full steps
# (launch.HOPPER_SOFTCAP_POLY, kernels/hopper.py _softcap_poly: a vote and a warp-uniform branch
# per 16 scores of a thread, the tanh where any lane's score is beyond the range), and the dK/dV
# kernel's softcap factor taken into P^T before dV's product (launch.HOPPER_BWD_CAP_EARLY).
#   PART=poly: their GPU tests (the polynomial against the float64 oracle on the fixed shift's
#     extreme cases, its out-of-range branch bit for bit the default's, the early factor bit for
#     bit), then parity.py --variants (16K causal d=128): none, softcap 30 folded (the default)
#     and its polynomial variants, 3 rounds.
#   PART=poly2: the chosen variants again (5 rounds) with softcap 30 and 50.
#   OUT=DIR PART=poly|poly2 bash benchmarks/results/h200-hopper/run49-stop68/gpu.sh
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
  poly2)
    timeout ${PLIMIT:-400} python benchmarks/parity.py --variants --rounds 5 --head-dim 128 \
      --only "none$;softcap=30 folded$;softcap=50 folded$;${VARS}" --out $OUT/poly2 > $OUT/poly2.log 2>&1
    echo "poly2 rc=$?"; grep -E '"pass": "overhead' $OUT/poly2.log | cut -c1-220 ;;
esac
