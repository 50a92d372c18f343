"""run14: where a forward+backward step's GPU time goes, kernel by kernel (torch.profiler),
for hopper.py's dense shapes (bf16, H*d = 2048, B*N = 16K, (B, N, H, d) storage viewed as
(B, H, N, d), as hopper.py times them). Usage: ``PYTHONPATH=. python profile_step.py``."""
import torch
from torch.profiler import ProfilerActivity, profile

import sparseflash as sf
from sparseflash.attention import sparse_attention

for N, d, causal in ((4096, 64, False), (4096, 64, True), (16384, 128, False), (16384, 128, True)):
    H, B = 2048 // d, max(1, 16384 // N)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, N, H, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
                   for _ in range(4))
    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
    layout = sf.compile(sf.dense(), N, block_size=128, causal=causal, num_heads=H)

    def step():
        return torch.autograd.grad(sparse_attention(qg, kg, vg, layout), (qg, kg, vg), do)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    print(f"=== dense{' causal' if causal else ''} N={N} d={d} B={B} H={H}: 5 steps")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
