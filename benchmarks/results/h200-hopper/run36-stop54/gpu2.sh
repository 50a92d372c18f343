#!/usr/bin/env bash
# Stop 54, call 2 (ordered by what decides first, for a short device budget): parity.py's
# variants at d=128 (16K, H=16, causal, bf16, p=0.1): the consumers' own draws, and own draws and
# the drawer with one Q buffer (the drawer's ring then two slots a consumer). Then Nsight Compute
# on the Hopper forward (benchmarks/ncu_fwd.py --d 128 --causal: dense causal 16K, H=16) for no
# dropout, own draws and the drawer (SPARSEFLASH_HOPPER_DROPOUT_DRAWER=1): issue slots, warp
# states, pipes. Then the
# portable kernels' host time with and without run34's portable-direct-launch.patch.
#   OUT=DIR bash benchmarks/results/h200-hopper/run36-stop54/gpu2.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
timeout ${PLIMIT:-170} python benchmarks/parity.py --variants --head-dim 128 \
  --only 'dropout 16-bit quad, 7 rounds$;dropout 16-bit quad, 7 rounds, drawer, one Q buffer$;dropout 16-bit quad, 7 rounds, one Q buffer$' \
  --out $OUT/variants 2>&1 | grep -E '"pass": "(overhead|fwd|fwd\+bwd)' | cut -c1-200
ncu --version > $OUT/ncu_version.txt 2>&1
M=sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg,smsp__inst_executed.sum,gpu__time_duration.sum
for v in none own drawer; do
  drop=$([ $v = none ] && echo 0 || echo 0.1)
  SPARSEFLASH_HOPPER_DROPOUT_DRAWER=$([ $v = drawer ] && echo 1 || echo 0) \
    timeout 60 ncu --kernel-name regex:hopper_fwd \
    --section SchedulerStats --section WarpStateStats --metrics $M \
    python benchmarks/ncu_fwd.py --d 128 --causal --dropout $drop > $OUT/ncu_$v.txt 2>&1
  echo "== $v"; grep -E "pct_of_peak|inst_executed.sum|cycles_elapsed|duration|Issue Slots|Issued Warp|Cycles Per Issued|Stall|ERR|rror" $OUT/ncu_$v.txt | cut -c1-130 | head -30
done
# the portable kernels' host time of a step, the tree against run34's portable-direct-launch.patch
P=$PWD/benchmarks/results/h200-hopper/run34-stop52/portable-direct-launch.patch
S=$PWD/benchmarks/results/h200-hopper/run36-stop54/host_portable.py
rm -rf /tmp/patched && mkdir -p /tmp/patched/benchmarks && cp -r sparseflash /tmp/patched/ \
  && cp benchmarks/*.py /tmp/patched/benchmarks/ \
  && (cd /tmp/patched && patch -p1 -s < $P) && for i in 1 2; do
  timeout 40 python $S tree 2>&1 | tail -1
  (cd /tmp/patched && PYTHONPATH=/tmp/patched timeout 40 python $S patched 2>&1 | tail -1)
done | tee $OUT/host_portable.txt
