#!/usr/bin/env bash
# run22 call 3: why the "last-first" walk slows the plain dense causal forward (calls 1-2:
# 1.83 against 1.57 ms). Times per walk and rescale threshold (benchmarks/walk_probe.py), then
# Nsight Compute on the table-order and last-first forwards (no modifier): clocks left as they
# are (--clock-control none), DRAM bytes, L2 hit rate, instructions, tensor-pipe activity.
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:$PYTHONPATH
timeout 200 python benchmarks/walk_probe.py --out $OUT/walk_probe.json 2>&1 | tail -12
M=gpu__time_duration.sum,sm__cycles_elapsed.avg.per_second,dram__bytes_read.sum,lts__t_sector_hit_rate.pct,smsp__inst_executed.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sectors_srcunit_tex_op_read.sum,smsp__cycles_active.avg
for w in table last-first; do
  timeout 120 ncu --clock-control none --kernel-name regex:hopper_fwd --metrics $M \
    python benchmarks/walk_probe.py --once $w > $OUT/ncu_$w.txt 2>&1
  echo "== $w"; grep -E "^\s+(gpu__|sm__|dram__|lts__|smsp__)" $OUT/ncu_$w.txt
done
