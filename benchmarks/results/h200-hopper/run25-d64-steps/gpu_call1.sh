#!/usr/bin/env bash
# run25 call 1: the dK/dV kernel with 128-query steps at d=64 (launch.HOPPER_BWD_STEP_M=128):
# the GPU tests of tests/test_hopper.py (run24 call 4's selection and the two new d=64 step
# tests) with SPARSEFLASH_HOPPER_BWD_STEP_M=128, so that every d=64 fused backward in them takes
# 128-query steps; then forward+backward of 64 against 128 interleaved (no peers) on the seven
# d=64 cases; then the d=64 peers (FA4, cuDNN) with ours at 128. On the FA4 host prefix of
# ../shared/fa4:
#   OUT=DIR bash benchmarks/results/h200-hopper/run25-d64-steps/gpu_call1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT/tests
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
python -m pytest -q -p no:cacheprovider --collect-only tests/test_hopper.py \
  -k "test_hopper_forward_matches_the_oracle or test_hopper_forward_walks_match_the_oracle or test_hopper_persistent_forward_matches_the_oracle or test_hopper_persistent_forward_equals_one_cta_per_tile or test_hopper_three_consumer_forward_matches_the_oracle or test_hopper_dropout_forms_are_bit_identical or test_hopper_three_consumers_equal_two or test_hopper_key_padding_crosses_a_block_and_empties_a_row or test_hopper_reads_transposed_views_in_place or test_hopper_runs_device_built_per_batch_tables or test_portable_fallbacks_still_run_under_auto or test_hopper_conditional_rescale_on_rows_whose_max_grows or test_hopper_softcap_and_alibi_match_the_oracle or test_hopper_softcap_fixed_shift_matches_the_oracle or test_hopper_quad_dropout_over_packed_documents or test_hopper_refuses_the_interleave_dropout_mapping or test_hopper_dropout_matches_the_oracle_with_its_mask or test_hopper_backward_with_and_without_the_fused_dq or test_hopper_dkdv_statistics_modes_match_the_oracle or test_hopper_d64_backward_steps_match_the_oracle or test_hopper_d64_128_query_steps_equal_64" 2>/dev/null | grep "::" > $OUT/tests/selected.txt
wc -l < $OUT/tests/selected.txt
SPARSEFLASH_HOPPER_BWD_STEP_M=128 bash benchmarks/gpu_shards.sh @$OUT/tests/selected.txt 12 ${TLIMIT:-240} $OUT/tests > $OUT/tests.txt 2>&1
grep -h -E "passed|failed" $OUT/tests/pytest_shard*.txt | tail -n 12
grep -h -E "^FAILED|^ERROR" $OUT/tests/pytest_shard*.txt | head -20
D64="dense N=16384 d=64;dense causal N=16384 d=64;dense N=4096 d=64;dense causal N=4096 d=64;local(8) N=16384 d=64;bigbird(3,2,3) N=16384 d=64;local(28)"
timeout ${PLIMIT:-150} python benchmarks/hopper.py --no-peers --cases "$D64" \
  --set "HOPPER_BWD_STEP_M=128" --out $OUT/ab > $OUT/ab.log 2>&1
echo "rc=$?" >> $OUT/ab.log
tail -n 2 $OUT/ab.log | cut -c1-300
SPARSEFLASH_HOPPER_BWD_STEP_M=128 timeout ${QLIMIT:-200} python benchmarks/hopper.py --skip portable --heat 4 \
  --cases "$D64" --out $OUT/peers > $OUT/peers.log 2>&1
echo "rc=$?" >> $OUT/peers.log
tail -n 2 $OUT/peers.log | cut -c1-300
