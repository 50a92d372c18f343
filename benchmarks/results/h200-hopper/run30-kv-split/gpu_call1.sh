#!/usr/bin/env bash
# run30 calls 1-2: the GPU tests of the forward's split K/V release (bit for bit against the joint
# release at 2-4 stages, the oracle cases on a 2-stage split ring), then kvsplit_probe.py:
#   OUT=DIR bash benchmarks/results/h200-hopper/run30-kv-split/gpu_call1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -c 'import flash_attn, importlib.metadata as m; print("flash-attn-4", m.version("flash-attn-4"))' >> $OUT/gpu.txt 2>&1
if [ -z "${NOTESTS:-}" ]; then
  python -m pytest --collect-only -q tests/test_hopper.py -k "${TESTK:-split_release}" 2>/dev/null \
    | grep "::" > $OUT/ids.txt
  bash benchmarks/gpu_shards.sh @$OUT/ids.txt 16 ${TLIMIT:-170} $OUT/tests > $OUT/tests.txt 2>&1
  grep -h -E " in [0-9.]+s" $OUT/tests/pytest_shard*.txt > $OUT/tests_summary.txt
  grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -40 >> $OUT/tests_summary.txt
  cat $OUT/tests_summary.txt
fi
timeout ${PLIMIT:-400} python benchmarks/results/h200-hopper/run30-kv-split/kvsplit_probe.py --out $OUT/probe \
  ${PROBE_ARGS:-} > $OUT/probe.log 2>&1
echo "rc=$?" >> $OUT/probe.log
cp $OUT/probe/summary.txt $OUT/summary.txt 2>/dev/null
tail -n 70 $OUT/probe.log
