#!/usr/bin/env bash
# run29 call 1 (on the FA4 host prefix): the GPU tests of the forward's output stores (the
# copies staged in the Q slots and in buffers of their own, the three-consumer oracle cases,
# the forward's oracle cases with register stores and with own buffers), then out_probe.py:
#   OUT=DIR bash benchmarks/results/h200-hopper/run29-own-out/gpu_call1.sh
cd "$(dirname "$0")/../../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/gpu.txt
python -c 'import torch, triton; print(torch.__version__, triton.__version__)' >> $OUT/gpu.txt
python -c 'import flash_attn, importlib.metadata as m; print("flash-attn-4", m.version("flash-attn-4"))' >> $OUT/gpu.txt 2>&1
git rev-parse HEAD >> $OUT/gpu.txt 2>/dev/null
if [ -z "${NOTESTS:-}" ]; then
  python -m pytest --collect-only -q tests/test_hopper.py \
    -k "output_copy_equals or three_consumer_forward or forward_stores_match" 2>/dev/null | grep "::" > $OUT/ids.txt
  bash benchmarks/gpu_shards.sh @$OUT/ids.txt 16 ${TLIMIT:-170} $OUT/tests > $OUT/tests.txt 2>&1
  grep -h -E " in [0-9.]+s" $OUT/tests/pytest_shard*.txt > $OUT/tests_summary.txt
  grep -h -E "^FAILED|^ERROR|^E  " $OUT/tests/pytest_shard*.txt | head -40 >> $OUT/tests_summary.txt
  cat $OUT/tests_summary.txt
fi
timeout ${PLIMIT:-400} python benchmarks/results/h200-hopper/run29-own-out/out_probe.py --out $OUT/probe \
  ${PROBE_ARGS:-} > $OUT/probe.log 2>&1
echo "rc=$?" >> $OUT/probe.log
cp $OUT/probe/summary.txt $OUT/summary.txt 2>/dev/null
tail -n 60 $OUT/probe.log
