#!/usr/bin/env bash
# Stop 53, call 2 (about 480 s), staged: A. the GPU tests of stop 52 and 53's changes and the
# ids run34's call 5 did not reach, on 8 shards: the dropout forms' bit identity (forms 0-3, 6
# and 7: 6 and 7 take the early draws in the quad mapping), the softcap fixed shift's oracle
# tests with the FMA shares, run34's 93 unreached ids, and (APPLY_PORTABLE=1: run34's
# portable-direct-launch.patch applied first) tests/test_attention.py and
# tests/test_real_batches.py; B. host_bound_probe.py --split (the median of 9 rounds a stage,
# after torch's own floor).
#   OUT=DIR [APPLY_PORTABLE=1] bash benchmarks/results/h200-hopper/run35-stop53/gpu2.sh
cd "$(dirname "$0")/../../../.."
if [ "${APPLY_PORTABLE:-0}" = 1 ]; then
  git apply benchmarks/results/h200-hopper/run34-stop52/portable-direct-launch.patch || { echo "patch failed"; exit 1; }
fi
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
echo "== A. tests"
# run34's unreached ids that still exist (the softcap oracle test's ids have gained the FMA
# share since: pytest refuses a whole shard over one id it cannot find)
python -m pytest --collect-only -q tests/test_hopper.py tests/test_attention.py 2>/dev/null \
  | grep "::" | sort -u > /tmp/ids_all.txt
{ grep "::" benchmarks/results/h200-hopper/run34-stop52/call5/not_reached.txt | sort -u \
    | comm -12 - /tmp/ids_all.txt
  python -m pytest --collect-only -q tests/test_hopper.py \
    -k "fixed_shift_matches_the_oracle or dropout_forms_are_bit_identical" 2>/dev/null | grep "::"
  [ "${APPLY_PORTABLE:-0}" = 1 ] && python -m pytest --collect-only -q tests/test_attention.py \
    tests/test_real_batches.py 2>/dev/null | grep "::"; } | sort -u > /tmp/ids_run35.txt
wc -l < /tmp/ids_run35.txt
bash benchmarks/gpu_shards.sh @/tmp/ids_run35.txt ${SHARDS:-8} ${TLIMIT:-300} $OUT/tests > $OUT/tests.txt 2>&1
grep -h -E "passed|failed|error" $OUT/tests/pytest_shard*.txt | grep -v "^[0-9.]*s " | cut -c1-300
grep -h -E "^(FAILED|ERROR)" $OUT/tests/pytest_shard*.txt | cut -c1-300 | head -30
echo "== B. host split (alone, 9 rounds)"
timeout ${HLIMIT:-150} python benchmarks/host_bound_probe.py --split --out $OUT/host 2>&1 | grep -v Warning | head -150
