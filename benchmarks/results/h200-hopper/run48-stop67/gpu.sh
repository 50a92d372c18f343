#!/usr/bin/env bash
# stop 67: the Hopper forward's "diagonal-first" walk (launch.HOPPER_FWD_WALK, kernels/hopper.py
# WALK 3: the row's block nearest the tile's diagonal first; the default with the abs ALiBi at
# d=128, where the rescale is conditional).
#   PART=walk: the walks' oracle cases with it forced (every layout of CASES, one CTA per tile
#     and persistent), the non-causal ALiBi oracle cases (softcap/ALiBi and dropout's mask) under
#     the new default, then parity.py --variants --non-causal at d=128: none, "alibi abs" (the
#     default: split by sides, walked diagonal-first) and "alibi abs, walk table"; 5 rounds.
#   PART=walk2: the walk's timing again with 9 rounds (non-causal, d=128), then the softcap's
#     exponentials a quarter on the FMA pipe (launch.HOPPER_SOFTCAP_EXP2_FMA=4, timed on an H200
#     only before) against the default, causal d=128, 5 rounds.
#   PART=ncu: Nsight Compute's source counters and pipe utilization of the d=128 forward, dense
#     causal 16K, H=16, bf16, without options and with softcap 30 (its forward costs 1.18-1.24x:
#     where that goes), reduced by benchmarks/ncu_hot_sass.py.
#   OUT=DIR PART=walk|walk2|ncu bash benchmarks/results/h200-hopper/run48-stop67/gpu.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
case "${PART:-walk}" in
  walk)
    timeout ${TLIMIT:-300} python -m pytest -v -p no:cacheprovider tests/test_hopper.py \
      -k '(walks_match_the_oracle and diagonal) or ((softcap_and_alibi_match_the_oracle or matches_the_oracle_with_its_mask) and noncausal and alibi)' \
      > $OUT/test_walk.log 2>&1
    echo "walk tests rc=$?"; grep -E "FAILED|ERROR" $OUT/test_walk.log | cut -c1-150; tail -1 $OUT/test_walk.log
    timeout ${ALIMIT:-240} python benchmarks/parity.py --variants --non-causal --rounds 5 --head-dim 128 \
      --only 'none$;alibi abs$;alibi abs, walk table$' --out $OUT/walk128 > $OUT/walk128.log 2>&1
    echo "walk128 rc=$?"; grep -E '"pass": "overhead' $OUT/walk128.log | cut -c1-200 ;;
  walk2)
    timeout ${ALIMIT:-250} python benchmarks/parity.py --variants --non-causal --rounds 9 --head-dim 128 \
      --only 'none$;alibi abs$;alibi abs, walk table$' --out $OUT/walk9 > $OUT/walk9.log 2>&1
    echo "walk9 rc=$?"; grep -E '"pass": "overhead' $OUT/walk9.log | cut -c1-200
    timeout ${SLIMIT:-200} python benchmarks/parity.py --variants --rounds 5 --head-dim 128 \
      --only 'none$;softcap=30 folded$;softcap=30 folded, exp2 quarter on FMA$' --out $OUT/fma4 > $OUT/fma4.log 2>&1
    echo "fma4 rc=$?"; grep -E '"pass": "overhead' $OUT/fma4.log | cut -c1-200 ;;
  ncu)
    ncu --version | tail -1 >> $OUT/gpu.txt
    for v in none softcap; do
      opt=$( [ $v = softcap ] && echo "--softcap 30" )
      tag=fwd_$v
      timeout ${NLIMIT:-120} ncu --kernel-name regex:fwd --launch-count 1 --section SourceCounters \
        --section WarpStateStats --section ComputeWorkloadAnalysis --section SpeedOfLight \
        --section InstructionStats --import-source no -o $OUT/$tag -f \
        python benchmarks/ncu_fwd.py --d 128 --causal $opt > $OUT/$tag.log 2>&1
      echo "== $tag rc=$?"
      ncu -i $OUT/$tag.ncu-rep --page source --csv --print-source sass > $OUT/$tag.source.csv 2>&1 &&
        python benchmarks/ncu_hot_sass.py $OUT/$tag.source.csv $OUT/$tag.hot.txt --min 0.3 && head -25 $OUT/$tag.hot.txt | cut -c1-150
      ncu -i $OUT/$tag.ncu-rep --page details --print-units base > $OUT/$tag.details.txt 2>&1
      gzip -f $OUT/$tag.source.csv; rm -f $OUT/$tag.ncu-rep
    done ;;
esac
