#!/usr/bin/env bash
# One device call: the GPU test suite (compiled kernels) and the decode host probe.
# Usage (on the GPU host, repository root): bash benchmarks/gpu_check.sh "$OUT" [pytest files...]
set -uo pipefail
out="${1:?output folder}"; shift
files="${*:-tests}"
export PYTHONPATH=".:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())' >> "$out/gpu.txt" 2>&1
timeout "${PYTEST_TIMEOUT:-420}" python3 -m pytest -q -p no:cacheprovider $files > "$out/pytest_gpu.txt" 2>&1
echo "pytest rc=$?" >> "$out/pytest_gpu.txt"
tail -5 "$out/pytest_gpu.txt"
grep -E "FAILED|ERROR" "$out/pytest_gpu.txt" | head -30
