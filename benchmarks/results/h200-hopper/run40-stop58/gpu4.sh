#!/usr/bin/env bash
# run40 call 4 (stop 58), on the tree where the split dK/dV loops are the default with the
# softcap alone: the SASS test that failed on this kind of machine in call 1 (its counts and the
# environment printed), the 36 softcap GPU tests of tests/test_hopper.py (the new default against
# the float64 oracle and the bit-identity tests) in 8 shards, then a third sample of the softcap's
# overhead with the default (two loops) and with one loop. Everything lands in $OUT/run.tgz.
#   OUT=DIR bash benchmarks/results/h200-hopper/run40-stop58/gpu4.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
D=benchmarks/results/h200-hopper/run40-stop58
R=/tmp/run40-4 && rm -rf $R && mkdir -p $R $OUT
trap 'tar czf $OUT/run.tgz -C $R .' EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee $R/gpu.txt
env | grep -iE "triton|sparseflash|cuda|ptxas" | sort > $R/env.txt
timeout 60 python - > $R/d64_sass.txt 2>&1 <<'PY' &
import sys
sys.path.insert(0, "tests")
import test_hopper as th
from sparseflash.kernels import launch
flags = dict(BLOCK_M=128, GROUP_SIZE=4, CAUSAL=True, HAS_WR=True, HAS_KPM=True, PER_SEQ=True,
             PACKED=True, SCHEDULED=True, STATS_TMA=2, FUSED_DQ=True,
             NUM_STAGES=launch._fused_stages(64, dict(HAS_DROPOUT=0), 128))
c = th._sass_counts("dkdv", 64, "fp16", flags)
print({k: c[k] for k in ("STL", "STEP_LOOPS_LOCAL", "HGMMA", "DEPBAR", "SHARED", "STEP_LOOP")})
PY
bash benchmarks/gpu_shards.sh @$D/softcap_ids.txt 8 ${TLIMIT:-110} $R/tests 2>&1 | tail -30 | tee $R/tests.txt
wait
cat $R/d64_sass.txt | tail -3 | cut -c1-300
timeout ${PLIMIT:-80} python benchmarks/parity.py --variants --head-dim 128 \
  --only 'softcap=30 folded$;softcap=30 folded, one loop$' \
  --out $R/variants128 2>&1 | grep -E '"pass": "overhead' | cut -c1-180 | tee $R/variants128.txt
