#!/usr/bin/env bash
# For the next session with a device (not run yet: stop 48 had none). Key padding and packed
# documents across shards, and key padding over device-built layouts (docs/distributed.md, "Key padding", "Packed documents") on GPUs:
#   one H200:   OUT=DIR bash benchmarks/results/h200x2-distributed/gpu_next_documents.sh
#   two H200s:  the same on kind nvidia-h200-x2 also runs the NCCL tests (a rank per GPU) and
#               times the two documents cases of distributed_bench.py beside one GPU.
cd "$(dirname "$0")/../../.."
export PYTHONPATH=.:${PYTHONPATH:-}
mkdir -p $OUT
# the pipelined forward: two gloo ranks on one GPU; the compiled-kernel runs of ALiBi's exact
# buffer and of packed documents with a key-padding mask need a rank per GPU (2 GPUs: they skip
# on one; stop 49 ran this on one H200: 1 passed, 2 skipped)
timeout 400 python3 -m pytest -q tests/test_distributed.py \
  -k "pipelined_forward_on_one_gpu or triton_kernels or packed_documents_triton" 2>&1 | tail -15 | tee $OUT/pytest_dist_gpu.txt
# device-built layouts with a key-padding mask (every block partial), compiled kernels
timeout 300 python3 -m pytest -q tests/test_dynamic_layouts.py tests/test_compile_values.py \
  -k "key_padding" 2>&1 | tail -8 | tee $OUT/pytest_device_kpm.txt
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  timeout 500 torchrun --nproc_per_node 2 benchmarks/distributed_bench.py --no-torch-cp --cases documents \
    --out $OUT/run8-documents 2>&1 | grep -v Warning | tail -8 | tee $OUT/run8-documents.txt
fi
