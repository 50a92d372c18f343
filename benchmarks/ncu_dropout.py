"""Two forwards of one dropout variant, for Nsight Compute to profile the Hopper forward's second
launch: dense causal 16K, H=16, d=128 (``--d``), bf16, p = 0.1, as parity.py's variants run it.
``--variant``: none (no dropout) or own (the consumers draw: the default). Stop 54's drawer
warpgroup (``--variant drawer``) needs ``run36-stop54/drawer-removed.patch``. E.g.
``ncu --kernel-name regex:hopper_fwd --launch-skip 1 --launch-count 1 --section SchedulerStats
--metrics sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active python
benchmarks/ncu_dropout.py --variant own`` (benchmarks/results/h200-hopper/run36-stop54/gpu2.sh)."""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
from sparseflash.kernels import launch  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--variant", choices=("none", "own"), default="own")
ap.add_argument("--d", type=int, default=128)
ap.add_argument("--seq-len", type=int, default=16384)
args = ap.parse_args()
launch.USE_HOPPER = True
N, H, d = args.seq_len, 16, args.d
layout = sf.compile(sf.dense(), N, block_size=128, num_heads=H, causal=True)
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v = (torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
p = 0.0 if args.variant == "none" else 0.1
for _ in range(2):
    sf.sparse_attention(q, k, v, layout, dropout_p=p)
torch.cuda.synchronize()
print(f"{args.variant} d={d} done", flush=True)
