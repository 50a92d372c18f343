#!/usr/bin/env bash
# For the next session with a device (not run yet), one call of about 550 s:
# A. alone: host_bound_probe.py --split, now the median of 9 rounds a stage (run34's single
#    rounds varied by up to 30%), after torch's own floor (an empty autograd Function's
#    forward and torch.autograd.grad on the same tensors);
# B. the softcap's exponentials partly on the FMA pipe (launch.HOPPER_SOFTCAP_EXP2_FMA, stop
#    52, compiled on the CPU only): parity.py's variants, softcap 30 and 50, d=128, against
#    the default (the issue-11 target: 1.10 forward and forward+backward);
# C. the 93 ids call 5 did not reach (its shards were cut at 330 s) and the softcap oracle
#    tests with the polynomial (test_hopper_softcap_fixed_shift_matches_the_oracle, 12 cases),
#    on 8 shards.
# With APPLY_PORTABLE=1 first `portable-direct-launch.patch` (stop 52, CPU-tested only): the
# portable kernels' TMA descriptors (on Hopper the dQ statistics kernel's K and V, about 2
# fills and 2 descriptor copies a step) through launch._DirectLaunch too; then add
# tests/test_attention.py and tests/test_real_batches.py to C.
#   OUT=DIR [APPLY_PORTABLE=1] bash benchmarks/results/h200-hopper/run34-stop52/gpu_next.sh
cd "$(dirname "$0")/../../../.."
if [ "${APPLY_PORTABLE:-0}" = 1 ]; then
  git apply benchmarks/results/h200-hopper/run34-stop52/portable-direct-launch.patch || { echo "patch failed"; exit 1; }
fi
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
here=benchmarks/results/h200-hopper/run34-stop52
echo "== A. host split (alone, 9 rounds)"
timeout ${HLIMIT:-150} python benchmarks/host_bound_probe.py --split --out $OUT/host 2>&1 | grep -v Warning | head -150
echo "== B. softcap exponentials on the FMA pipe"
timeout ${PLIMIT:-200} python benchmarks/parity.py --variants \
  --only 'softcap=30 folded$;softcap=30 folded, exp2;softcap=50 folded$;softcap=50 folded, exp2' \
  --out $OUT/softcap_fma 2>&1 | grep -E '"pass": "(overhead|fwd|fwd\+bwd)' | cut -c1-260
echo "== C. tests"
{ grep "::" $here/call5/not_reached.txt; python -m pytest --collect-only -q tests/test_hopper.py \
    -k "fixed_shift_matches_the_oracle" 2>/dev/null | grep "::"
  [ "${APPLY_PORTABLE:-0}" = 1 ] && python -m pytest --collect-only -q tests/test_attention.py \
    tests/test_real_batches.py 2>/dev/null | grep "::"; } | sort -u > /tmp/ids_next.txt
bash benchmarks/gpu_shards.sh @/tmp/ids_next.txt ${SHARDS:-8} ${TLIMIT:-300} $OUT/tests > $OUT/tests.txt 2>&1
grep -h -E "passed|failed|error" $OUT/tests/pytest_shard*.txt | grep -v "^[0-9.]*s " | cut -c1-300
grep -h -E "^(FAILED|ERROR)" $OUT/tests/pytest_shard*.txt | cut -c1-300 | head -30
