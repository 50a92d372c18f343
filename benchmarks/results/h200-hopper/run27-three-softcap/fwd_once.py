"""run27: the Hopper forward on dense causal d=128 (B=16384/N, H=16, bf16), run a few times, for
Nsight Compute (gpu_call5.sh profiles its third launch).

    PYTHONPATH=. python benchmarks/results/h200-hopper/run27-three-softcap/fwd_once.py N
"""
import sys

import torch

import sparseflash as sf

N = int(sys.argv[1])
B, H, d = 16384 // N, 16, 128
layout = sf.compile(sf.dense(), N, block_size=128, causal=True, num_heads=H)
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v = (torch.randn(B, N, H, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
           for _ in range(3))
for _ in range(4):
    sf.sparse_attention(q, k, v, layout)
torch.cuda.synchronize()
