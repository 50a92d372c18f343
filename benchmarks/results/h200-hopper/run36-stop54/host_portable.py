"""Stop 54: host time of a forward+backward step on the portable kernels (launch.USE_HOPPER and
USE_HOPPER_BWD False), local(2) causal 16K, H=16, d=128, bf16: the median over 9 rounds of 10
steps each, queued behind ~50 ms of GPU sleep (no launch waits on the GPU). Run once in the
tree and once with run34's portable-direct-launch.patch applied, to time the patch."""
import statistics
import sys
import time

import torch

import sparseflash as sf
from sparseflash.kernels import launch

launch.USE_HOPPER = False
launch.USE_HOPPER_BWD = False
N, H, d = 16384, 16, 128
layout = sf.compile(sf.local(2), N, block_size=128, num_heads=H, causal=True)
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v = (torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(True)
           for _ in range(3))
do = torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g)


def step():
    out = sf.sparse_attention(q, k, v, layout)
    return torch.autograd.grad(out, (q, k, v), do)


for _ in range(3):
    step()
torch.cuda.synchronize()
per = []
for _ in range(9):
    torch.cuda._sleep(100_000_000)
    t0 = time.perf_counter()
    for _ in range(10):
        step()
    per.append((time.perf_counter() - t0) / 10 * 1e6)
    torch.cuda.synchronize()
print(f"{sys.argv[1] if len(sys.argv) > 1 else 'tree'}: host us/step median {statistics.median(per):.1f} "
      f"(rounds {', '.join(f'{x:.0f}' for x in per)})", flush=True)
