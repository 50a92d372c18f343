#!/usr/bin/env bash
# run24 call 7: the rest of the peers table (d=64, the 64K and 34-43% cases, local(2) 16K),
# same tree and method as call 6 (run on the FA4 host prefix of ../shared/fa4; the command was
# typed into the device call as below, this file records it):
#   OUT=DIR bash benchmarks/results/h200-hopper/run24-bwd-profile/gpu_call7.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
timeout 250 python benchmarks/hopper.py --skip portable --heat 4 \
  --cases "dense N=16384 d=64;dense causal N=16384 d=64;dense N=4096 d=64;dense causal N=4096 d=64;local(2) N=16384;local(32) N=65536;local(2) N=65536;local(8) N=16384 d=64;bigbird(3,2,3) N=16384 d=64;bigbird(16,8,16);strided(4);local(28)" \
  --out $OUT/peers > $OUT/peers.log 2>&1
echo "rc=$?" >> $OUT/peers.log
