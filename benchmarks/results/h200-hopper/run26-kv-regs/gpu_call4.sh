#!/usr/bin/env bash
# run26 call 4, the tree with the unfused kernel's fix (KV_REGS 1: K and V through the step's
# last wait) and K and V in registers by default with GQA: call 2's GPU tests (with the
# equality test's unfused forms) with the default switches and with
# SPARSEFLASH_HOPPER_BWD_KV_REGS=1 (also dropout, the causal ALiBi's column form and the
# unfused kernel), in parallel; then kv_gqa_check.py (the failure of call 2, run again):
#   OUT=DIR bash benchmarks/results/h200-hopper/run26-kv-regs/gpu_call4.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT/tests
python -m pytest -q -p no:cacheprovider --collect-only tests/test_hopper.py \
  -k "test_hopper_d64_kv_in_registers_equals_shared_memory or test_hopper_d64_backward_steps_match_the_oracle or test_hopper_d64_128_query_steps_equal_64 or test_hopper_backward_with_and_without_the_fused_dq or test_hopper_dkdv_statistics_modes_match_the_oracle or test_hopper_softcap_and_alibi_match_the_oracle or test_hopper_dropout_matches_the_oracle_with_its_mask or test_hopper_quad_dropout_over_packed_documents or test_hopper_key_padding_crosses_a_block_and_empties_a_row or test_hopper_runs_device_built_per_batch_tables" 2>/dev/null | grep "::" > $OUT/tests/selected.txt
wc -l < $OUT/tests/selected.txt
bash benchmarks/gpu_shards.sh @$OUT/tests/selected.txt 8 ${TLIMIT:-240} $OUT/tests/default > $OUT/tests_default.txt 2>&1 &
SPARSEFLASH_HOPPER_BWD_KV_REGS=1 bash benchmarks/gpu_shards.sh @$OUT/tests/selected.txt 8 ${TLIMIT:-240} $OUT/tests/forced > $OUT/tests_forced.txt 2>&1 &
wait
grep -h -E "passed|failed" $OUT/tests/default/pytest_shard*.txt | tail -n 8
grep -h -E "passed|failed" $OUT/tests/forced/pytest_shard*.txt | tail -n 8
grep -h -E "^FAILED|^ERROR" $OUT/tests/*/pytest_shard*.txt | head -20
grep -h -E "^E  " $OUT/tests/*/pytest_shard*.txt | head -20
timeout 240 python benchmarks/results/h200-hopper/run26-kv-regs/kv_gqa_check.py > $OUT/kv_gqa_check.txt 2>&1
grep "^H=" $OUT/kv_gqa_check.txt
