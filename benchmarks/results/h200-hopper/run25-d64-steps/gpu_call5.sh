#!/bin/bash
# run25 call 5: HOPPER_BWD_DQ_ROWS (with 128-query steps, each warpgroup's dQ product over its
# 64 queries and every column): the d=64 step tests, the backward oracle tests and the dropout
# forms with it on; forward+backward, the default against it, the seven d=64 cases; then Nsight
# Compute on the default d=64 dK/dV kernel (dense 4K d=64, as run24 call 2 profiled the 64-query
# form):
#   OUT=DIR bash benchmarks/results/h200-hopper/run25-d64-steps/gpu_call5.sh
set -u
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
python -m pytest -q -p no:cacheprovider --collect-only tests/test_hopper.py \
  -k "test_hopper_d64_backward_steps_match_the_oracle or test_hopper_d64_128_query_steps_equal_64 or test_hopper_backward_with_and_without_the_fused_dq or test_hopper_dkdv_statistics_modes_match_the_oracle or test_hopper_dropout_forms_are_bit_identical or test_hopper_softcap_and_alibi_match_the_oracle" 2>/dev/null | grep "::" > /tmp/selected.txt
for ((i = 0; i < 10; i++)); do
  awk -v i=$i 'NR % 10 == i' /tmp/selected.txt > /tmp/ids$i.txt
  timeout ${TLIMIT:-200} python -c "
import sys, pytest
from sparseflash.kernels import launch
launch.HOPPER_BWD_DQ_ROWS = True
sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider'] + open(sys.argv[1]).read().split()))" /tmp/ids$i.txt > /tmp/pytest_rows$i.txt 2>&1 &
done
wait
tail -q -n 1 /tmp/pytest_rows*.txt | tee $OUT/tests.txt
grep -h -E "^FAILED|^ERROR|^E  " /tmp/pytest_rows*.txt | head -40 | tee -a $OUT/tests.txt
D64="dense N=16384 d=64;dense causal N=16384 d=64;dense N=4096 d=64;dense causal N=4096 d=64;local(8) N=16384 d=64;bigbird(3,2,3) N=16384 d=64;local(28)"
timeout ${PLIMIT:-200} python benchmarks/hopper.py --no-peers --cases "$D64" \
  --set "HOPPER_BWD_DQ_ROWS=True" --out $OUT/ab > $OUT/ab.log 2>&1
echo "rc=$?" >> $OUT/ab.log
tail -n 2 $OUT/ab.log | cut -c1-300
c="dense N=4096 d=64"
tag=$(echo "$c" | tr ' =' '__')
ncu --version > "$OUT/ncu_version.txt" 2>&1
timeout ${NLIMIT:-150} ncu --kernel-name regex:"_hopper_dkdv" --launch-skip 1 --launch-count 1 --set full \
    --import-source no -o "$OUT/$tag" -f python benchmarks/ncu_bwd_peers.py --cases "$c" --no-fa4 \
    > "$OUT/$tag.log" 2>&1
ncu -i "$OUT/$tag.ncu-rep" --page details --print-units base > "$OUT/$tag.details.txt" 2>&1
ncu -i "$OUT/$tag.ncu-rep" --page source --csv --print-source sass > "$OUT/$tag.source.csv" 2>&1 || true
python benchmarks/ncu_hot_sass.py "$OUT/$tag.source.csv" "$OUT/$tag.hot_sass.txt" > "$OUT/hot.log" 2>&1 || true
rm -f "$OUT"/*.ncu-rep "$OUT"/*.source.csv
grep -E "Duration|Issue Slots Busy|Registers Per" "$OUT/$tag.details.txt" | head -6
