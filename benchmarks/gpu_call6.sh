#!/usr/bin/env bash
# final device call: the row kernel's first pass in chunks, swept; the build's GPU time beside
# Flex; the kernel tests on the GPU with the default and with chunks; one ncu profile of the row kernel
export PYTHONPATH=".:${PYTHONPATH:-}"
O="$OUT"
timeout 130 python3 benchmarks/dynamic_layouts.py --suites build_tiles,build_gpu --out $O/build > $O/build.log 2>&1
echo "build rc=$?"; grep -o '"impl": "[^"]*", "pass": "[^"]*", "ms": [0-9.a-z]*' $O/build.log | sed 's/"impl": //; s/"pass": "build", "ms"://' | grep -v "kernel void"
for chunk in 16384 128; do
timeout 60 python3 -c "import sys, pytest; import sparseflash.dynamic as D; D._ROW_CHUNK = $chunk; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-k', 'kernel or tie or padded', 'tests/test_dynamic_layouts.py']))" > $O/pytest_kernels_chunk$chunk.txt 2>&1
echo "pytest chunk $chunk rc=$?"; tail -1 $O/pytest_kernels_chunk$chunk.txt
done
cat > /tmp/one_build.py <<'PY'
import torch, sparseflash as sf
s = torch.randn(8, 32, 512, 512, device="cuda")
for _ in range(2):
    sf.topk_layout(s, 16, seq_len=65536, block_size=128, causal=True)
torch.cuda.synchronize()
PY
timeout 60 ncu --kernel-name regex:_rows_kernel --launch-skip 1 --launch-count 1 --section SpeedOfLight --section Occupancy --section WarpStateStats python3 /tmp/one_build.py > $O/ncu_rows.txt 2>&1
echo "ncu rc=$?"; grep -E "Duration|Achieved Occupancy|Theoretical Occupancy|Registers Per|Compute \(SM\) Throughput|Memory Throughput|Warp Cycles Per Issued" $O/ncu_rows.txt | head -12
