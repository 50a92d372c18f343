#!/usr/bin/env bash
# run24 call 4: the tree with the dK/dV kernel's two changes (launch._HOPPER_BWD_REGS["plain"]
# 240, launch.HOPPER_BWD_ROWS_LATE): every GPU test of tests/test_hopper.py (the selection of
# run23 call 5, 10 shards), then forward+backward A/B'd interleaved against the step's rows
# read first and against the old default (rows first, 232 registers), no peers:
#   OUT=DIR bash benchmarks/results/h200-hopper/run24-bwd-profile/gpu_call4.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT/tests
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/gpu.txt
python -m pytest -q -p no:cacheprovider --collect-only tests/test_hopper.py \
  -k "test_hopper_forward_matches_the_oracle or test_hopper_forward_walks_match_the_oracle or test_hopper_persistent_forward_matches_the_oracle or test_hopper_persistent_forward_equals_one_cta_per_tile or test_hopper_three_consumer_forward_matches_the_oracle or test_hopper_dropout_forms_are_bit_identical or test_hopper_three_consumers_equal_two or test_hopper_key_padding_crosses_a_block_and_empties_a_row or test_hopper_reads_transposed_views_in_place or test_hopper_runs_device_built_per_batch_tables or test_portable_fallbacks_still_run_under_auto or test_hopper_conditional_rescale_on_rows_whose_max_grows or test_hopper_softcap_and_alibi_match_the_oracle or test_hopper_softcap_fixed_shift_matches_the_oracle or test_hopper_quad_dropout_over_packed_documents or test_hopper_refuses_the_interleave_dropout_mapping or test_hopper_dropout_matches_the_oracle_with_its_mask or test_hopper_backward_with_and_without_the_fused_dq or test_hopper_dkdv_statistics_modes_match_the_oracle" 2>/dev/null | grep "::" > /tmp/sel.txt
wc -l < /tmp/sel.txt > $OUT/tests/selected.txt
for ((i = 0; i < 10; i++)); do
  awk -v i=$i 'NR % 10 == i' /tmp/sel.txt > /tmp/shard$i.txt
  timeout ${TLIMIT:-240} python -m pytest -q -p no:cacheprovider $(cat /tmp/shard$i.txt) \
    > $OUT/tests/pytest_$i.txt 2>&1 &
done
wait
for f in $OUT/tests/pytest_*.txt; do echo "== $f"; tail -n 1 $f; done > $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_*.txt | head -60 >> $OUT/tests.txt
cat $OUT/tests.txt | grep -v "^==" | head -20
timeout ${PLIMIT:-300} python benchmarks/hopper.py --no-peers \
  --cases "dense N=16384 d=128;dense causal N=16384 d=128;dense N=4096 d=128;dense causal N=4096 d=128;dense N=4096 d=64;local(2) N=16384;local(8) N=16384 d=128;butterfly;strided(16);bigbird(3,2,3) N=16384 d=128;local(8) N=16384 d=64" \
  --set "HOPPER_BWD_ROWS_LATE=False" --set "HOPPER_BWD_ROWS_LATE=False;_HOPPER_BWD_REGS={'plain': 232, 'causal': 240}" \
  --out $OUT/ab > $OUT/ab.log 2>&1
echo "rc=$?" >> $OUT/ab.log
tail -n 2 $OUT/ab.log | cut -c1-300
