"""Probe: backward tile configs on short-row layouts (run 16).

The forward+backward misses against Flex are short-row layouts at 16K (1–8 blocks per
row), where the two backward kernels dominate. This times ``attention_backward`` alone
(CUDA graphs, no host time) for a set of ``BwdConfig`` variants at d=128 on those layouts
and on dense ones (to catch regressions), and checks every variant against the default
config's gradients. Run on the GPU:

    PYTHONPATH=. python3 benchmarks/bwd_config_probe.py
"""
import torch

import sparseflash as sf
from benchmarks.variants import time_cell
from sparseflash.kernels import launch

C = launch.BwdConfig
CONFIGS = {
    "default": None,
    "s2": C(64, 128, 128, 64, 8, 2, True),
    "n1=64": C(64, 64, 128, 64, 8, 3, True),
    "all64 w4": C(64, 64, 64, 64, 4, 3, True),
    "m2=64": C(64, 128, 64, 64, 8, 3, True),
    "m1=32": C(32, 128, 128, 64, 8, 3, True),
    "n2=32": C(64, 128, 128, 32, 8, 3, True),
    "no tma": C(64, 128, 128, 64, 8, 3, False),
    "n2=128 s2": C(64, 128, 128, 128, 8, 2, True),
}
CASES = [
    ("strided(32) 16K", sf.strided(32), 1, 16, 16384, False),
    ("butterfly(3) 16K", sf.butterfly(3), 1, 16, 16384, False),
    ("local(1) 16K", sf.local(1), 1, 16, 16384, False),
    ("local(3) 16K", sf.local(3), 1, 16, 16384, False),
    ("local(16) 16K", sf.local(16), 1, 16, 16384, False),
    ("strided(4) 16K", sf.strided(4), 1, 16, 16384, False),
    ("dense causal 1K B16", sf.dense(), 16, 16, 1024, True),
    ("dense 16K", sf.dense(), 1, 16, 16384, False),
]


def main():
    torch.manual_seed(0)
    print(f"{'case':<22}{'blk/row':>8}" + "".join(f"{n:>11}" for n in CONFIGS))
    for name, pat, B, H, N, causal in CASES:
        d = 128
        q, k, v, do = (torch.randn(B, H, N, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
        lay = sf.compile(pat, N, causal=causal, num_heads=H)
        t = lay.to("cuda")
        kw = dict(scale=d ** -0.5)
        out, lse = launch.attention_forward(q, k, v, lay, t, **kw)
        row = f"{name:<22}{lay.nnz / (H * lay.num_q_blocks):>8.1f}"
        ref = None
        for cname, cfg in CONFIGS.items():
            def bwd():
                return launch.attention_backward(do, q, k, v, out, lse, lay, t,
                                                 config=cfg, **kw)
            cell, ref = time_cell(cname, bwd, ref, 10)
            row += cell
        print(row, flush=True)


if __name__ == "__main__":
    main()
