#!/usr/bin/env bash
# For the next session with a device (not run yet), one call of about 500 s:
# 1. where our forward+backward's host time goes (run33 call 1: about 1 ms of host time a
#    backward, no synchronisation): `host_bound_probe.py --split`;
# 2. the stop-48 test ids that run33 call 3 did not reach (its shards were cut at 440 s), and
#    test_pipelined_forward_on_one_gpu, whose rank 0 was still running after 300 s there, three
#    times (since stop 51 a stuck rank's Python stacks come with the failure);
# 3. racecheck's tile-slot reports stay open (run33 call 1: the producer's warp barrier left
#    them, 347 errors); nothing staged for them here.
#   OUT=DIR bash benchmarks/results/h200-hopper/run33-stop51/gpu_next.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
here=benchmarks/results/h200-hopper/run33-stop51
# call 3's shard i ran the ids NR % 8 == i of ids.txt; shards 0-3 were cut after 18, 23, 27
# and 27 of them
for i_ran in 0:18 1:23 2:27 3:27; do
  awk -v i=${i_ran%:*} 'NR % 8 == i' $here/call3/ids.txt | tail -n +$(( ${i_ran#*:} + 1 ))
done > /tmp/unreached.txt
bash benchmarks/gpu_shards.sh @/tmp/unreached.txt 4 ${TLIMIT:-400} $OUT/unreached > $OUT/unreached.txt 2>&1 &
for i in 1 2 3; do
  timeout 400 python -m pytest -q -p no:cacheprovider \
    tests/test_distributed.py::test_pipelined_forward_on_one_gpu > $OUT/pipelined_$i.txt 2>&1
done &
timeout ${HLIMIT:-200} python benchmarks/host_bound_probe.py --split --out $OUT/host 2>&1 | grep -v Warning | tail -12
wait
echo "== unreached ids"; cut -c1-300 $OUT/unreached.txt
for i in 1 2 3; do echo "== pipelined $i"; tail -n 30 $OUT/pipelined_$i.txt | cut -c1-300; done
