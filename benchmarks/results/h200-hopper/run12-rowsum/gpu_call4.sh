#!/usr/bin/env bash
# run12 call 4: Nsight Compute on the Hopper forward (dense 16K, d=64 and d=128): where its
# steps go, since fewer instructions (the row-sum product, call 3) and fewer exponentials
# (run10) did not make it faster. Sections to ncu.txt; per-instruction stalls (SourceCounters)
# of the d=64 kernel to ncu_src.txt.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.
timeout 200 ncu --kernel-name regex:hopper_fwd --section SpeedOfLight --section WarpStateStats \
  --section SchedulerStats --section ComputeWorkloadAnalysis --section LaunchStats \
  --section Occupancy --metrics sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg,smsp__inst_executed.sum,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active \
  python benchmarks/ncu_fwd.py > $OUT/ncu.txt 2>&1
tail -n 5 $OUT/ncu.txt
timeout 200 ncu --kernel-name regex:hopper_fwd --section SourceCounters --section WarpStateStats \
  --print-details all python benchmarks/ncu_fwd.py --d 64 > $OUT/ncu_src.txt 2>&1
tail -n 3 $OUT/ncu_src.txt
grep -E "Stall|Cycles Per Issued|Issued Warp|Duration|Elapsed Cycles|pct_of_peak|inst_executed|Pipe" $OUT/ncu.txt | head -80
