#!/usr/bin/env bash
# device call (the two-GPU host): the distributed tests (the split backward bitwise against one
# launch, the sm_90 dK/dV kernel included; the compiled kernels over NCCL on 2 ranks), then
# the context-parallel benchmark
# (run8) and a profile of the bigbird step.
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O="$OUT"
NG=$(nvidia-smi -L | wc -l)
timeout ${T_TESTS:-150} python3 -m pytest -q -p no:cacheprovider tests/test_distributed.py > $O/pytest_gpu.txt 2>&1
echo "pytest rc=$?"; tail -3 $O/pytest_gpu.txt
if [ "$NG" -ge 2 ]; then
  mkdir -p $O/run8
  timeout ${T_BENCH:-330} torchrun --nproc_per_node 2 benchmarks/distributed_bench.py ${BENCH_ARGS:-} --out $O/run8 2>&1 | grep -v "^W1\|Warning\|return func" > $O/run8/log.txt
  echo "bench rc=$?"; cat $O/run8/log.txt | cut -c1-400
  mkdir -p $O/prof
  timeout ${T_PROF:-80} torchrun --nproc_per_node 2 benchmarks/distributed_profile.py --cases bigbird --out $O/prof 2>&1 | grep "wall ms"
  rm -f $O/prof/*.json
fi
