#!/usr/bin/env bash
# run25 call 4: HOPPER_BWD_LAG (d=64: the fused dQ's staging a step late, under the next step's
# first products): the d=64 step tests, the backward oracle tests and the dropout forms with LAG
# on; then forward+backward, the default against LAG, interleaved, the seven d=64 cases:
#   OUT=DIR bash benchmarks/results/h200-hopper/run25-d64-steps/gpu_call4.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT/tests
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
python -m pytest -q -p no:cacheprovider --collect-only tests/test_hopper.py \
  -k "test_hopper_d64_backward_steps_match_the_oracle or test_hopper_d64_128_query_steps_equal_64 or test_hopper_backward_with_and_without_the_fused_dq or test_hopper_dkdv_statistics_modes_match_the_oracle or test_hopper_dropout_forms_are_bit_identical or test_hopper_softcap_and_alibi_match_the_oracle" 2>/dev/null | grep "::" > /tmp/selected.txt
for ((i = 0; i < 10; i++)); do
  awk -v i=$i 'NR % 10 == i' /tmp/selected.txt > /tmp/ids$i.txt
  timeout ${TLIMIT:-200} python -c "
import sys, pytest
from sparseflash.kernels import launch
launch.HOPPER_BWD_LAG = True
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider'] + open(sys.argv[1]).read().split()))" /tmp/ids$i.txt > /tmp/pytest_lag$i.txt 2>&1 &
done
wait
tail -q -n 1 /tmp/pytest_lag*.txt | tee $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " /tmp/pytest_lag*.txt | head -40 | tee -a $OUT/tests.txt
D64="dense N=16384 d=64;dense causal N=16384 d=64;dense N=4096 d=64;dense causal N=4096 d=64;local(8) N=16384 d=64;bigbird(3,2,3) N=16384 d=64;local(28)"
timeout ${PLIMIT:-200} python benchmarks/hopper.py --no-peers --cases "$D64" \
  --set "HOPPER_BWD_LAG=True" --out $OUT/ab > $OUT/ab.log 2>&1
echo "rc=$?" >> $OUT/ab.log
tail -n 2 $OUT/ab.log | cut -c1-300
