"""run15: the fused dQ against the unfused Hopper backward and a float64 reference on a few
shapes (one process; prints max |error| / max |reference| of each gradient)."""
import sys
import time

import torch

import sparseflash as sf
from benchmarks.real_batches import launch_switches


def grads(q, k, v, do, layout, fused, **kw):
    with launch_switches(USE_HOPPER=True, USE_HOPPER_BWD=True, HOPPER_FUSED_DQ=fused):
        torch.manual_seed(3)
        out = sf.sparse_attention(q, k, v, layout, **kw)
        return torch.autograd.grad(out, (q, k, v), do)


CASES = [  # name, pattern, B, H, Hkv, N, Nk, d, causal, kwargs
    ("dense 1K", sf.dense(), 1, 2, 2, 1024, 1024, 128, False, {}),
    ("dense causal 1000", sf.dense(), 2, 2, 2, 1000, 1000, 128, True, {}),
    ("local d64 gqa", sf.local(2), 1, 4, 2, 1300, 1300, 64, True, {}),
    ("kv longer", sf.dense(), 1, 2, 2, 300, 1000, 128, True, {}),
    ("dropout softcap", sf.local(1) | sf.global_blocks(1), 1, 2, 2, 1024, 1024, 128, True,
     dict(dropout_p=0.2, softcap=20.0)),
]
for name, pattern, B, H, Hkv, N, Nk, d, causal, kw in CASES:
    t0 = time.time()
    g = torch.Generator(device="cuda").manual_seed(0)
    dt = torch.bfloat16
    q = torch.randn(B, H, N, d, device="cuda", dtype=dt, generator=g).requires_grad_(True)
    k = torch.randn(B, Hkv, Nk, d, device="cuda", dtype=dt, generator=g).requires_grad_(True)
    v = torch.randn(B, Hkv, Nk, d, device="cuda", dtype=dt, generator=g).requires_grad_(True)
    do = torch.randn(B, H, N, d, device="cuda", dtype=dt, generator=g)
    layout = sf.compile(pattern, N, kv_len=Nk, block_size=128, causal=causal, num_heads=H)
    ref = grads(q, k, v, do, layout, False, **kw)
    got = grads(q, k, v, do, layout, True, **kw)
    torch.cuda.synchronize()
    errs = [((a.float() - b.float()).abs().max() / b.float().abs().max()).item() for a, b in zip(got, ref)]
    nan = any(not torch.isfinite(a).all() for a in got)
    print(f"{name:20s} fused vs unfused rel err dq {errs[0]:.2e} dk {errs[1]:.2e} dv {errs[2]:.2e} "
          f"nonfinite={nan} {time.time() - t0:.1f}s", flush=True)
