#!/usr/bin/env bash
# stop 70: the GPU half of tests/test_hopper.py on today's kernels (last run whole in stop 58,
# run40), the FA4 peers with today's kernels (last in run48, stop 67), and the dK/dV output
# copy's 3,072-query rule retuned now that the copy finds its coordinates again (stop 69).
#   PART=tests: the `test_hopper_` tests (the GPU ones; KEXPR: a -k expression instead) in SHARDS
#     shards (benchmarks/gpu_shards.sh).
#   PART=peers: hopper.py with FA4, cuDNN and FlexAttention beside ours (dense, then sparse;
#     FA4 installed first: benchmarks/fa4_carry.sh, docs/hopper.md "Installing FA4 on the device").
#   PART=retune: hopper.py --no-peers on the peers table's cases whose columns are longer than
#     the rule's 3,072 queries (they store dK and dV by registers), the copy forced on
#     (HOPPER_BWD_OUT_TMA=True, the coordinates found again) beside the default.
#   PART=parity: the parity suite (dropout, softcap and ALiBi overheads, FA2's dropout beside).
#   OUT=DIR PART="tests retune" bash benchmarks/results/h200-hopper/run51-stop70/gpu.sh
#   (PART: one or more of tests, peers, retune, parity, run in that order)
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
for part in ${PART:-tests}; do
case $part in
  tests)
    bash benchmarks/gpu_shards.sh tests/test_hopper.py ${SHARDS:-12} ${TLIMIT:-360} $OUT/tests "${KEXPR:-test_hopper_}" \
      > $OUT/tests.txt 2>&1
    grep -h -E "passed|failed" $OUT/tests/pytest_shard*.txt | tail -n 20
    grep -h -E "^FAILED|^ERROR|^EARLY FAILED" $OUT/tests/pytest_shard*.txt | sort -u | cut -c1-200 | head -20 ;;
  peers)
    for p in dense sparse; do
      timeout ${HLIMIT:-280} python benchmarks/hopper.py --skip portable --flex --only $p --rounds 3 --heat 1 \
        --out $OUT/$p > $OUT/$p.log 2>&1
      echo "$p rc=$?"; tail -1 $OUT/$p.log | cut -c1-300
    done ;;
  retune)
    timeout ${RLIMIT:-200} python benchmarks/hopper.py --no-peers --rounds 3 --heat 1 \
      --cases 'dense N=4096;dense N=16384;dense causal N=16384;local(32);bigbird(16;strided(4);local(28)' \
      --set HOPPER_BWD_OUT_TMA=True --out $OUT/retune > $OUT/retune.log 2>&1
    echo "retune rc=$?"; tail -1 $OUT/retune.log | cut -c1-300 ;;
  parity)
    timeout ${PLIMIT:-230} python benchmarks/parity.py --out $OUT/parity > $OUT/parity.log 2>&1
    echo "parity rc=$?"; grep -E '"pass": "overhead' $OUT/parity.log | cut -c1-220 ;;
esac
done
