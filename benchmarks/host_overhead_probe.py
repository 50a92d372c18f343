"""Probe: host time per call and end-to-end time, launch plans on vs off (run 14).

``launch.CACHE_PLANS = False`` sends every launch through Triton's ``JITFunction``; True
(the default) launches the cached binaries directly. For each case it prints host µs per
call (50 calls queued without a sync; the GPU queue never fills), the median time of the
public call with L2 flushes between calls (``triton.testing.do_bench``, as the harness
times), and the CUDA-graph time of the forward (kernel only, no host). It also checks that
both paths give bitwise-equal outputs and gradients. Run on the GPU:

    PYTHONPATH=. python3 benchmarks/host_overhead_probe.py
"""
import cProfile
import pstats
import time

import torch
import triton.testing

import sparseflash as sf
from sparseflash.kernels import launch

DT = torch.bfloat16
CASES = [
    ("strided(32) 16K d128", sf.strided(32), 1, 16, 16384, 128, False),
    ("butterfly(3) 16K d128", sf.butterfly(3), 1, 16, 16384, 128, False),
    ("local(1) 16K d128", sf.local(1), 1, 16, 16384, 128, False),
    ("local(3) 16K d128", sf.local(3), 1, 16, 16384, 128, False),
    ("dense causal 1K d64", sf.dense(), 16, 32, 1024, 64, True),
    ("dense causal 1K d128", sf.dense(), 16, 16, 1024, 128, True),
    ("dense 1K d64", sf.dense(), 16, 32, 1024, 64, False),
    ("dense 1K d128", sf.dense(), 16, 16, 1024, 128, False),
]


def host_us(fn, n=50):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    us = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return us


def main():
    torch.manual_seed(0)
    head = (f"{'case':<24}{'plans':>6}{'host fwd':>10}{'host fwd(g)':>12}{'host f+b':>10}"
            f"{'fwd ms':>9}{'f+b ms':>9}{'fwd cg ms':>10}{'f+b cg ms':>10}")
    print(head)
    for name, pat, B, H, N, d, causal in CASES:
        q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=DT, requires_grad=True) for _ in range(3))
        do = torch.randn_like(q)
        lay = sf.compile(pat, N, causal=causal, num_heads=H)

        def fwd():
            return sf.sparse_attention(q, k, v, lay, causal=causal)

        def fwd_nograd():
            with torch.no_grad():
                return sf.sparse_attention(q, k, v, lay, causal=causal)

        def step():
            return torch.autograd.grad(fwd(), (q, k, v), do)

        results = {}
        for plans in (False, True):
            launch.CACHE_PLANS = plans
            step()
            results[plans] = (fwd().detach(), *step())
            torch.cuda.synchronize()
            row = [host_us(fwd_nograd), host_us(fwd), host_us(step)]
            row += [triton.testing.do_bench(fwd, warmup=25, rep=100, return_mode="median"),
                    triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median")]
            for fn in (fwd_nograd, step):
                try:
                    row.append(triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median"))
                except Exception:  # noqa: BLE001
                    row.append(float("nan"))
            print(f"{name:<24}{'on' if plans else 'off':>6}{row[0]:>10.0f}{row[1]:>12.0f}{row[2]:>10.0f}"
                  f"{row[3]:>9.3f}{row[4]:>9.3f}{row[5]:>10.3f}{row[6]:>10.3f}", flush=True)
        same = all(torch.equal(a, b) for a, b in zip(results[False], results[True]))
        print(f"{'':<24}bitwise equal outputs and gradients, plans on vs off: {same}", flush=True)
        if not same:
            raise SystemExit(f"{name}: plans changed the results")
    launch.CACHE_PLANS = True
    # where the host time of a fwd+bwd step still goes (the profiler inflates Python calls)
    name, pat, B, H, N, d, causal = CASES[0]
    q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=DT, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    lay = sf.compile(pat, N, causal=causal, num_heads=H)
    for _ in range(3):
        torch.autograd.grad(sf.sparse_attention(q, k, v, lay, causal=causal), (q, k, v), do)
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200):
        torch.autograd.grad(sf.sparse_attention(q, k, v, lay, causal=causal), (q, k, v), do)
    prof.disable()
    torch.cuda.synchronize()
    print(f"\n== cProfile of 200 fwd+bwd steps, {name}")
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
