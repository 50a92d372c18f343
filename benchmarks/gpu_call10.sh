#!/usr/bin/env bash
# device call (one H200): softcap and ALiBi in the Hopper kernels (issue 11). (1) The Hopper
# softcap/ALiBi tests (forced on, against the float64 oracle and the portable kernels' error)
# and the parity tests on the GPU; (2) the parity benchmark (dropout / softcap / ALiBi overhead
# against no option and FA2, one run), whose "kernel" rows say which kernel ran per variant.
# (rows are printed as they come: a timeout keeps them in parity/log.txt). Worst case ~6 min.
# Usage (on the GPU host, repository root): OUT=DIR bash benchmarks/gpu_call10.sh
set -uo pipefail
export PYTHONPATH=".:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
O="${OUT:?output folder}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv > "$O/gpu.txt" 2>&1
python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())' >> "$O/gpu.txt" 2>&1
timeout ${T_TESTS:-150} python3 -m pytest -q -p no:cacheprovider tests/test_hopper.py -k "(softcap or alibi or dropout) and not compiles" \
  > "$O/pytest_hopper_mods.txt" 2>&1
echo "pytest hopper rc=$?" | tee -a "$O/pytest_hopper_mods.txt"
timeout ${T_PARITY_TESTS:-60} python3 -m pytest -q -p no:cacheprovider tests/test_parity.py -k "softcap or alibi" \
  >> "$O/pytest_hopper_mods.txt" 2>&1
echo "pytest parity rc=$?" | tee -a "$O/pytest_hopper_mods.txt"
grep -E "passed|failed|FAILED|ERROR" "$O/pytest_hopper_mods.txt" | head -30
mkdir -p "$O/parity"
timeout ${T_BENCH:-150} python3 benchmarks/parity.py --out "$O/parity" > "$O/parity/log.txt" 2>&1
echo "parity rc=$?"
grep -E '"kernel"|overhead|error' "$O/parity/log.txt" | cut -c1-400
