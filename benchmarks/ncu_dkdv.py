"""One forward+backward per case, for Nsight Compute to profile the dK/dV kernels:
dense 16K d=128 (Hopper dK/dV), dense causal 16K d=128 with the Hopper and with the portable
dK/dV kernel. Run under ncu with a kernel filter, e.g.
``ncu --kernel-name regex:dkdv --section SpeedOfLight --section WarpStateStats
--section SchedulerStats python benchmarks/ncu_dkdv.py`` (benchmarks/results/h200-hopper/
run6-dkdv-dispatch/ncu)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
from sparseflash.kernels import launch  # noqa: E402

for causal, hopper_bwd in ((False, True), (True, True), (True, False)):
    N, d, H = 16384, 128, 16
    layout = sf.compile(sf.dense(), N, block_size=128, causal=causal, num_heads=H)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    launch.USE_HOPPER_BWD = hopper_bwd
    torch.autograd.grad(sf.sparse_attention(q, k, v, layout), (q, k, v), do)
    torch.cuda.synchronize()
    print(f"causal={causal} hopper_dkdv={hopper_bwd} done", flush=True)
