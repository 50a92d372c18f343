#!/usr/bin/env bash
# Stop 55, call 1: where the time of dropout and softcap goes. Nsight Compute on the Hopper
# forward (benchmarks/ncu_fwd.py) and dK/dV kernel (benchmarks/ncu_dkdv.py), dense causal 16K,
# H=16, d=128, bf16, each without options, with dropout p=0.1 and with softcap 30: issue
# slots, every stall reason per issued instruction, every pipe's utilization. Then
# parity.py's variants for the same options (the times beside the profile, same machine), then
# the portable kernels' host time with and without run34's portable-direct-launch.patch.
#   OUT=DIR bash benchmarks/results/h200-hopper/run37-stop55/gpu1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
ncu --version > $OUT/ncu_version.txt 2>&1
M='regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg,gpu__time_duration.sum'
for kern in fwd dkdv; do
  for v in none dropout softcap; do
    opt=$( [ $v = dropout ] && echo "--dropout 0.1" ; [ $v = softcap ] && echo "--softcap 30" )
    timeout 90 ncu --kernel-name regex:${kern} --launch-count 1 --metrics "$M" \
      python benchmarks/ncu_${kern}.py --d 128 --causal $opt > $OUT/ncu_${kern}_$v.txt 2>&1
    echo "== $kern $v rc=$?"
    grep -E "issue_active|inst_executed.sum|duration|cycles_elapsed|ERR|rror" $OUT/ncu_${kern}_$v.txt | cut -c1-120 | head -6
  done
done
timeout ${PLIMIT:-200} python benchmarks/parity.py --variants --head-dim 128 \
  --only 'dropout 16-bit quad, 7 rounds$;softcap=30 folded$' \
  --out $OUT/variants 2>&1 | grep -E '"pass": "(overhead|fwd|fwd\+bwd)' | cut -c1-200
P=$PWD/benchmarks/results/h200-hopper/run34-stop52/portable-direct-launch.patch
S=$PWD/benchmarks/results/h200-hopper/run36-stop54/host_portable.py
rm -rf /tmp/patched && mkdir -p /tmp/patched/benchmarks && cp -r sparseflash /tmp/patched/ \
  && cp benchmarks/*.py /tmp/patched/benchmarks/ \
  && (cd /tmp/patched && patch -p1 -s < $P) && for i in 1 2; do
  timeout 40 python $S tree 2>&1 | tail -1
  (cd /tmp/patched && PYTHONPATH=/tmp/patched timeout 40 python $S patched 2>&1 | tail -1)
done | tee $OUT/host_portable.txt
