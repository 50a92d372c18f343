"""Probe: why are layouts with few blocks per row slow?  Host overhead vs kernel time vs
tile config.  Prints one table; run on the GPU:

    PYTHONPATH=. python3 benchmarks/short_rows_probe.py
"""
import time

import torch
import triton
import triton.testing

import sparseflash as sf
from sparseflash.kernels import launch

torch.manual_seed(0)
dt = torch.bfloat16
CASES = [
    ("strided(32) 16K", sf.strided(32), 1, 16, 16384, 128, False),
    ("butterfly(3) 16K", sf.butterfly(3), 1, 16, 16384, 128, False),
    ("local(1) 16K", sf.local(1), 1, 16, 16384, 128, False),
    ("local(3) 16K", sf.local(3), 1, 16, 16384, 128, False),
    ("local(8) 16K", sf.local(8), 1, 16, 16384, 128, False),
    ("dense causal 1K d64", sf.dense(), 16, 32, 1024, 64, True),
    ("dense 1K d64", sf.dense(), 16, 32, 1024, 64, False),
    ("dense causal 1K d128", sf.dense(), 16, 16, 1024, 128, True),
    ("dense 16K d128", sf.dense(), 1, 16, 16384, 128, False),
]
CONFIGS = [None, launch.FwdConfig(128, 64, 8, 2), launch.FwdConfig(128, 64, 4, 3),
           launch.FwdConfig(64, 128, 4, 3), launch.FwdConfig(128, 128, 8, 2),
           launch.FwdConfig(64, 64, 4, 3)]


def cg_time(fn):
    try:
        return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")
    except Exception:  # noqa: BLE001
        return float("nan")


print(f"{'case':<22}{'public':>9}{'pub cg':>9}{'host us':>9}" + "".join(
    f"{('default' if c is None else f'{c.block_m}x{c.block_n}w{c.num_warps}s{c.num_stages}'):>14}" for c in CONFIGS))
for name, pat, B, H, N, d, causal in CASES:
    q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=dt) for _ in range(3))
    lay = sf.compile(pat, N, causal=causal, num_heads=H)
    t = lay.to("cuda")
    f = lambda: sf.sparse_attention(q, k, v, lay, causal=causal)
    f(); torch.cuda.synchronize()
    pub = triton.testing.do_bench(f, warmup=25, rep=100, return_mode="median")
    pubcg = cg_time(f)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        sf.sparse_attention(q, k, v, lay, causal=causal)
    host = (time.perf_counter() - t0) / 50 * 1e6
    torch.cuda.synchronize()
    row = f"{name:<22}{pub:>9.3f}{pubcg:>9.3f}{host:>9.0f}"
    ref = None
    for c in CONFIGS:
        g = lambda: launch.attention_forward(q, k, v, lay, t,
                                             scale=d ** -0.5, config=c)
        try:
            o, _ = g()
            if ref is None:
                ref = o
            err = (o.float() - ref.float()).abs().max().item()
            ms = cg_time(g)
            row += f"{ms:>9.3f}{'' if err < 1e-2 else '!':1}{'':4}"
        except Exception:  # noqa: BLE001
            row += f"{'err':>14}"
    print(row, flush=True)

# Where the host time of one call goes (Python side; the C launcher shows as its caller).
import cProfile
import pstats

for name, pat, B, H, N, d, causal in (CASES[0], CASES[5]):
    q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=dt, requires_grad=True) for _ in range(3))
    lay = sf.compile(pat, N, causal=causal, num_heads=H)
    do = torch.randn_like(q)
    step = lambda: torch.autograd.grad(sf.sparse_attention(q, k, v, lay, causal=causal), (q, k, v), do)
    step(); torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        sf.sparse_attention(q, k, v, lay, causal=causal)
    fwd_host = (time.perf_counter() - t0) / 50 * 1e6
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        step()
    fb_host = (time.perf_counter() - t0) / 50 * 1e6
    torch.cuda.synchronize()
    print(f"\n== {name}: host us per call with grad: fwd {fwd_host:.0f}, fwd+bwd {fb_host:.0f}")
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(100):
        step()
    pr.disable()
    torch.cuda.synchronize()
    pstats.Stats(pr).sort_stats("tottime").print_stats(12)
