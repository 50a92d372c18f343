"""run14: the dQ kernel's tile config on Hopper (launch._HOPPER_DQ_TABLE: BLOCK_M2, BLOCK_N2,
num_warps, num_stages, which the portable dQ kernel alone reads beside the Gluon dK/dV
kernel; the defaults are _BWD_TABLE's, tuned in run 6 with the portable dK/dV). This times
the forward+backward step (hopper.py's dense shapes and local(8) 16K: bf16, H*d = 2048, B*N = 16K, (B, N, H, d) storage) under several of them, one process, each on a fresh layout
(no cached plan), and compares each config's gradients with the default's. Usage:
``PYTHONPATH=. python dq_sweep.py``."""
import json

import torch
import triton

import sparseflash as sf
from sparseflash.attention import sparse_attention
from sparseflash.kernels import launch

CONFIGS = {64: [(64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2), (64, 128, 4, 3), (128, 64, 4, 3)],
           128: [(128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3), (64, 128, 4, 2), (128, 32, 8, 3)]}
default = dict(launch._HOPPER_DQ_TABLE)
CASES = [("dense", sf.dense(), N, d, causal)
         for N, d, causal in ((4096, 64, False), (4096, 64, True), (16384, 128, False), (16384, 128, True))]
CASES += [("local(8)", sf.local(8), 16384, d, False) for d in (64, 128)]      # hopper.py's sparse shapes
for name, pattern, N, d, causal in CASES:
    H, B = 2048 // d, max(1, 16384 // N)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, N, H, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
                   for _ in range(4))
    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
    ref = None
    for m2, n2, warps, stages in CONFIGS[d]:
        launch._HOPPER_DQ_TABLE[d] = (m2, n2, warps, stages)
        layout = sf.compile(pattern, N, block_size=128, causal=causal, num_heads=H)

        def step():
            return torch.autograd.grad(sparse_attention(qg, kg, vg, layout), (qg, kg, vg), do)
        try:
            grads = step()
            if ref is None:
                ref = grads
            err = max(((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
                      for a, b in zip(grads, ref))
            ms = triton.testing.do_bench(step, warmup=50, rep=300)
            fwd_ms = triton.testing.do_bench(lambda: sparse_attention(q, k, v, layout), warmup=25, rep=150)
            row = dict(case=f"{name}{' causal' if causal else ''} N={N} d={d}", dq=[m2, n2, warps, stages],
                       fwd_bwd_ms=round(ms, 4), bwd_ms=round(ms - fwd_ms, 4), grad_err=float(f"{err:.2e}"))
        except Exception as exc:  # noqa: BLE001 - record and go on (smem, compile)
            row = dict(case=f"{name}{' causal' if causal else ''} N={N} d={d}", dq=[m2, n2, warps, stages],
                       error=f"{type(exc).__name__}: {str(exc)[:150]}")
        print(json.dumps(row), flush=True)
    launch._HOPPER_DQ_TABLE[d] = default[d]
