#!/usr/bin/env bash
# final device call: the build's GPU time with the rounds' loads issued together, the kernel
# tests on the GPU, and one ncu profile of the row kernel (occupancy and stall reasons)
export PYTHONPATH=".:${PYTHONPATH:-}"
O="$OUT"
timeout 80 python3 benchmarks/dynamic_layouts.py --suites build_gpu --out $O/build > $O/build.log 2>&1
echo "build rc=$?"; grep -o '"impl": "[^"]*", "pass": "[^"]*", "ms": [0-9.a-z]*' $O/build.log | sed 's/"impl": //; s/"pass": "build", "ms"://' | grep -v "kernel void"
timeout 60 python3 -m pytest -q -p no:cacheprovider -k "kernel or tie or padded" tests/test_dynamic_layouts.py > $O/pytest_kernels.txt 2>&1
echo "pytest rc=$?"; tail -1 $O/pytest_kernels.txt
cat > /tmp/one_build.py <<'PY'
import torch, sparseflash as sf
s = torch.randn(8, 32, 512, 512, device="cuda")
for _ in range(2):
    sf.topk_layout(s, 16, seq_len=65536, block_size=128, causal=True)
torch.cuda.synchronize()
PY
timeout 90 ncu --kernel-name regex:_rows_kernel --launch-skip 1 --launch-count 1 --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats python3 /tmp/one_build.py > $O/ncu_rows.txt 2>&1
echo "ncu rc=$?"; grep -E "Duration|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Stall|Compute \(SM\) Throughput|Memory Throughput|Warp Cycles Per Issued" $O/ncu_rows.txt | head -20
