#!/usr/bin/env bash
# run27 call 1: the d=64 softcap forward on three consumer warpgroups
# (launch.HOPPER_FWD_THREE_SOFTCAP). The GPU tests of the three-consumer forward and of softcap
# (oracle, bit-for-bit against two consumers), then parity.py --variants at d=64: softcap 30 on
# three consumers (the new default) / two (before), each with the running max (the d=64
# default) and the fixed shift:
#   OUT=DIR bash benchmarks/results/h200-hopper/run27-three-softcap/gpu_call1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT/tests
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -m pytest -q -p no:cacheprovider --collect-only tests/test_hopper.py \
  -k "three_consumer or three_consumers or softcap_and_alibi or softcap_fixed_shift or conditional_rescale" 2>/dev/null | grep "::" > $OUT/tests/selected.txt
wc -l < $OUT/tests/selected.txt
bash benchmarks/gpu_shards.sh @$OUT/tests/selected.txt 8 ${TLIMIT:-240} $OUT/tests/default > $OUT/tests.txt 2>&1
grep -h -E " in [0-9.]+s" $OUT/tests/default/pytest_shard*.txt
grep -h -E "^FAILED|^ERROR" $OUT/tests/default/pytest_shard*.txt | head -20
grep -h -E "^E  " $OUT/tests/default/pytest_shard*.txt | head -20
timeout ${VLIMIT:-300} python benchmarks/parity.py --variants --head-dim 64 --heat 4 \
  --only 'softcap=30 folded$;softcap=30 folded, two consumers$;softcap=30 folded, fixed shift$;softcap=30 folded, two consumers, fixed shift$' \
  --out $OUT/variants > $OUT/variants.log 2>&1
echo "rc=$?" >> $OUT/variants.log
grep -E '"pass": "(overhead|check)' $OUT/variants.log | cut -c1-220
tail -n 2 $OUT/variants.log | cut -c1-300
