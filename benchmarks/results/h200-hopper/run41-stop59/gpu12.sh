#!/usr/bin/env bash
# run41 call 12: the fused dK/dV kernel's dQ product issued before dK's (launch.HOPPER_BWD_DQ_FIRST,
# FlashAttention-4's sm90 order, which call 10's profile shows): its GPU bit-identity test, then
# hopper.py's A/B on the d=128 cases and parity.py's variants with dropout and softcap.
#   OUT=DIR bash benchmarks/results/h200-hopper/run41-stop59/gpu12.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
R=/tmp/run41-dqf && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
timeout ${TLIMIT:-150} python -m pytest -q -x tests/test_hopper.py -k dq_first_is_bit_identical -p no:cacheprovider \
  > $R/tests.txt 2>&1; echo "tests rc=$?"; tail -3 $R/tests.txt
timeout ${ALIMIT:-240} python benchmarks/hopper.py --no-peers --rounds 5 --heat 1 \
  --cases 'dense N=4096 d=128;dense causal N=4096 d=128;dense N=16384 d=128;dense causal N=16384 d=128;local(8) N=16384 d=128;local(2) N=16384 d=128;bigbird(3,2,3) N=16384 d=128;butterfly' \
  --set HOPPER_BWD_DQ_FIRST=True --out $R/ab > $R/ab.log 2>&1; echo "ab rc=$?"
python -m benchmarks.ab_table $R/ab/hopper.json | tee $R/ab_table.txt
timeout ${VLIMIT:-200} python benchmarks/parity.py --variants --rounds 3 --out $R/variants \
  --only 'dropout 16-bit quad, 7 rounds$;softcap=30 folded$;none, dQ first$;dropout 16-bit quad, 7 rounds, dQ first$;softcap=30 folded, dQ first$' \
  > $R/variants.log 2>&1; echo "variants rc=$?"
grep -E '"pass": "overhead' $R/variants.log | cut -c1-200
