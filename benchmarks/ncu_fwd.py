"""One forward per case, for Nsight Compute to profile the Hopper forward kernel: dense 16K at
d=64 (H=32) and d=128 (H=16), bf16, not causal. Run under ncu with a kernel filter, e.g.
``ncu --kernel-name regex:hopper_fwd --section SpeedOfLight --section WarpStateStats
--section SchedulerStats --section ComputeWorkloadAnalysis python benchmarks/ncu_fwd.py``
(benchmarks/results/h200-hopper/run12-rowsum/ncu). ``--d 64`` profiles one head dim only."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402

dims = [int(sys.argv[sys.argv.index("--d") + 1])] if "--d" in sys.argv else [64, 128]
for d in dims:
    N, H = 16384, 2048 // d
    layout = sf.compile(sf.dense(), N, block_size=128, num_heads=H)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    sf.sparse_attention(q, k, v, layout)
    torch.cuda.synchronize()
    print(f"d={d} done", flush=True)
