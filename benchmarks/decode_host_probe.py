"""Host time of one decode step, and where it goes: ``PYTHONPATH=. python benchmarks/decode_host_probe.py``.

B=8, 32 query heads, 8 KV heads, d=128, bf16, a 32K cache, ``local(8) | global_blocks(1)``
causal. Prints the median host microseconds per call (batches of 100 back-to-back calls, GPU
not the bottleneck) for sparse_attention, for decode_forward alone (the launcher with the
layout and tables in hand) and for two bare torch launches, then a cProfile of 2000 calls.
"""
import cProfile
import pstats
import sys
from pathlib import Path

import torch

import sparseflash as sf
from sparseflash.attention import _checked_call, _decode_step
from sparseflash.kernels.launch import decode_forward

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.real_batches import host_us  # noqa: E402


def main():
    B, H, Hkv, d, L = 8, 32, 8, 128, 32768
    pattern = sf.local(8) | sf.global_blocks(1)
    q = torch.randn(B, H, 1, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(B, Hkv, L, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    ours = lambda: sf.sparse_attention(q, k, v, pattern, causal=True)
    layout, row = _decode_step(_checked_call(q, k, v, pattern, None, True, None, "auto", None, None, None, None))
    t = layout.to(q.device)
    launcher = lambda: decode_forward(q, k, v, layout, t, table_row=row, scale=d ** -0.5, schedule_cache=t.plans)
    x = torch.zeros(16, device="cuda")

    def bare():
        x.add_(1.0)
        x.mul_(1.0)
    for name, fn in (("sparse_attention", ours), ("decode_forward only", launcher), ("two bare launches", bare)):
        print(f"{name:22s} {host_us(fn, q.device):7.1f} us/call")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(2000):
        ours()
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(22)


if __name__ == "__main__":
    main()
