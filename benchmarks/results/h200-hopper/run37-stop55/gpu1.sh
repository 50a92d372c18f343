#!/usr/bin/env bash
# Stop 55, call 1. First the dK/dV kernel's early draws (HOPPER_DROPOUT_FORM 7): their GPU
# bit-identity test, then parity.py's variants at d=128 (16K, H=16, causal, bf16, p=0.1):
# 16-bit quad draws with form 3 (default) and form 7, and softcap 30 (the times beside the
# profiles below, same machine). Then Nsight Compute on the Hopper forward
# (benchmarks/ncu_fwd.py) and dK/dV kernel (benchmarks/ncu_dkdv.py), dense causal 16K, H=16,
# d=128, bf16, without options, with dropout p=0.1 and with softcap 30: issue slots, every stall
# reason per issued instruction, every pipe's utilization. Then the portable kernels' host time
# with and without run34's portable-direct-launch.patch.
#   OUT=DIR bash benchmarks/results/h200-hopper/run37-stop55/gpu1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
timeout ${TLIMIT:-120} python -m pytest -q -x \
  "tests/test_hopper.py::test_hopper_dropout_forms_are_bit_identical[quad-16]" 2>&1 | tail -4 | tee $OUT/tests.txt
timeout ${PLIMIT:-200} python benchmarks/parity.py --variants --head-dim 128 \
  --only 'dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, dK/dV early draws$;softcap=30 folded$' \
  --out $OUT/variants 2>&1 | grep -E '"pass": "(overhead|fwd|fwd\+bwd)|check' | cut -c1-220
ncu --version > $OUT/ncu_version.txt 2>&1
M='regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg,gpu__time_duration.sum'
for kv in "fwd none" "fwd dropout" "dkdv none" "dkdv dropout" "fwd softcap" "dkdv softcap"; do
  set -- $kv; kern=$1; v=$2
  opt=$( [ $v = dropout ] && echo "--dropout 0.1" ; [ $v = softcap ] && echo "--softcap 30" )
  timeout 80 ncu --kernel-name regex:${kern} --launch-count 1 --metrics "$M" \
    python benchmarks/ncu_${kern}.py --d 128 --causal $opt > $OUT/ncu_${kern}_$v.txt 2>&1
  echo "== $kern $v rc=$?"
  grep -E "issue_active|inst_executed.sum|duration|ERR|rror" $OUT/ncu_${kern}_$v.txt | cut -c1-120 | head -4
done
P=$PWD/benchmarks/results/h200-hopper/run34-stop52/portable-direct-launch.patch
S=$PWD/benchmarks/results/h200-hopper/run36-stop54/host_portable.py
rm -rf /tmp/patched && mkdir -p /tmp/patched/benchmarks && cp -r sparseflash /tmp/patched/ \
  && cp benchmarks/*.py /tmp/patched/benchmarks/ \
  && (cd /tmp/patched && patch -p1 -s < $P) && for i in 1 2; do
  timeout 40 python $S tree 2>&1 | tail -1
  (cd /tmp/patched && PYTHONPATH=/tmp/patched timeout 40 python $S patched 2>&1 | tail -1)
done | tee $OUT/host_portable.txt
