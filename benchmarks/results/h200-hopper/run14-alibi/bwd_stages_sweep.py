"""run14: the Gluon dK/dV kernel's (Q, dO) ring depth (launch._HOPPER_BWD_STAGES), timed as the
forward+backward step of hopper.py's shapes (bf16, H*d = 2048, B*N = 16K, (B, N, H, d)
storage), one process, each depth on a fresh layout, gradients compared with the default's.
Usage: ``PYTHONPATH=. python bwd_stages_sweep.py``."""
import json

import torch
import triton

import sparseflash as sf
from sparseflash.attention import sparse_attention
from sparseflash.kernels import launch

DEPTHS = {64: (4, 3, 6), 128: (3, 2, 4)}
default = dict(launch._HOPPER_BWD_STAGES)
for name, pattern, N, d, causal in (("dense", sf.dense(), 4096, 64, False), ("dense", sf.dense(), 4096, 64, True),
                                    ("dense", sf.dense(), 16384, 128, True)):
    H, B = 2048 // d, max(1, 16384 // N)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, N, H, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
                   for _ in range(4))
    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
    ref = None
    for depth in DEPTHS[d]:
        launch._HOPPER_BWD_STAGES[d] = depth
        layout = sf.compile(pattern, N, block_size=128, causal=causal, num_heads=H)

        def step():
            return torch.autograd.grad(sparse_attention(qg, kg, vg, layout), (qg, kg, vg), do)
        case = f"{name}{' causal' if causal else ''} N={N} d={d}"
        try:
            grads = step()
            if ref is None:
                ref = grads
            err = max(((a.float() - b.float()).abs().max() / b.float().abs().max()).item()
                      for a, b in zip(grads, ref))
            ms = triton.testing.do_bench(step, warmup=50, rep=300)
            row = dict(case=case, stages=depth, fwd_bwd_ms=round(ms, 4), grad_err=float(f"{err:.2e}"))
        except Exception as exc:  # noqa: BLE001 - record and go on (shared memory, compile)
            row = dict(case=case, stages=depth, error=f"{type(exc).__name__}: {str(exc)[:150]}")
        print(json.dumps(row), flush=True)
    launch._HOPPER_BWD_STAGES[d] = default[d]
