"""Probe: forward tile configs on the dense shapes of the dense suite (run 17).

Times ``attention_forward`` alone (CUDA graphs, no host time) for ``FwdConfig`` variants on
the dense suite's shapes (B·N = 16K, H·d = 2048), causal and not, and checks each variant's
output against the default config's. Run on the GPU:

    PYTHONPATH=. python3 benchmarks/fwd_config_probe.py
"""
import torch

import sparseflash as sf
from benchmarks.variants import time_cell
from sparseflash.kernels import launch

F = launch.FwdConfig
CONFIGS = {
    64: {"default": None, "128x64 tma": F(128, 64, 4, 3, True), "128x64": F(128, 64, 4, 3, False),
         "128x128": F(128, 128, 4, 3, False), "64x64 tma": F(64, 64, 4, 3, True),
         "128x64 tma s4": F(128, 64, 4, 4, True), "128x128 tma s2": F(128, 128, 4, 2, True)},
    128: {"default": None, "128x64 w8": F(128, 64, 8, 3, False), "128x64 w8 tma": F(128, 64, 8, 3, True),
          "128x128 s2": F(128, 128, 8, 2, False), "64x128 w4": F(64, 128, 4, 3, False)},
}


def main():
    torch.manual_seed(0)
    for d, configs in CONFIGS.items():
        print(f"\nd={d}: ms (CUDA graphs), forward only")
        print(f"{'N':>6}{'causal':>7}" + "".join(f"{n:>15}" for n in configs))
        for N in (1024, 4096, 16384):
            for causal in (False, True):
                B, H = 16384 // N, 2048 // d
                q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
                lay = sf.compile(sf.dense(), N, causal=causal, num_heads=H)
                t = lay.to("cuda")
                row = f"{N:>6}{str(causal):>7}"
                ref = None
                for cname, cfg in configs.items():
                    def fwd():
                        return launch.attention_forward(q, k, v, lay, t,
                                                        scale=d ** -0.5, config=cfg)
                    cell, ref = time_cell(cname, fwd, ref, 14)
                    row += cell
                print(row, flush=True)


if __name__ == "__main__":
    main()
