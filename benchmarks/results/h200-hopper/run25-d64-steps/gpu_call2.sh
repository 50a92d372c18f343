#!/usr/bin/env bash
# run25 call 2: 128-query steps at d=64 as the default (launch._HOPPER_BWD_STEP_M_DEFAULT), and
# HOPPER_BWD_AHEAD (both parts' S^T and dP^T issued at the step's start): the d=64 step tests,
# the backward oracle tests and the dropout forms with AHEAD on; then forward+backward, the
# default against 64-query steps and against AHEAD, interleaved, the seven d=64 cases:
#   OUT=DIR bash benchmarks/results/h200-hopper/run25-d64-steps/gpu_call2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT/tests
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
python -m pytest -q -p no:cacheprovider --collect-only tests/test_hopper.py \
  -k "test_hopper_d64_backward_steps_match_the_oracle or test_hopper_d64_128_query_steps_equal_64 or test_hopper_backward_with_and_without_the_fused_dq or test_hopper_dkdv_statistics_modes_match_the_oracle or test_hopper_dropout_forms_are_bit_identical or test_hopper_softcap_and_alibi_match_the_oracle" 2>/dev/null | grep "::" > $OUT/tests/selected.txt
wc -l < $OUT/tests/selected.txt
for ((i = 0; i < 10; i++)); do
  awk -v i=$i 'NR % 10 == i' $OUT/tests/selected.txt > $OUT/tests/ids$i.txt
  timeout ${TLIMIT:-200} python -c "
import sys, pytest
from sparseflash.kernels import launch
launch.HOPPER_BWD_AHEAD = True
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider'] + open(sys.argv[1]).read().split()))" $OUT/tests/ids$i.txt > $OUT/tests/pytest_ahead$i.txt 2>&1 &
done
wait
tail -q -n 1 $OUT/tests/pytest_ahead*.txt
grep -h -E "^FAILED|^ERROR" $OUT/tests/pytest_ahead*.txt | head -20
D64="dense N=16384 d=64;dense causal N=16384 d=64;dense N=4096 d=64;dense causal N=4096 d=64;local(8) N=16384 d=64;bigbird(3,2,3) N=16384 d=64;local(28)"
timeout ${PLIMIT:-200} python benchmarks/hopper.py --no-peers --cases "$D64" \
  --set "HOPPER_BWD_STEP_M=64" --set "HOPPER_BWD_AHEAD=True" --out $OUT/ab > $OUT/ab.log 2>&1
echo "rc=$?" >> $OUT/ab.log
tail -n 2 $OUT/ab.log | cut -c1-300
