"""run27 probe: where the dense causal 4K forward loses to FA4 (stop 42).

Fits, from the same run, ``time = steps * s + tiles * t`` for ours and FA4: dense causal 4K
(B=4) and 16K (B=1) have the same number of 128-query tiles (2048 at H=16) but 4x fewer
128-key steps at 4K, so the pair separates a step's cost from a tile's. Beside them, variants
of ours on the 4K causal case: the same block tables without the token mask (``from_mask`` of
the lower block triangle, non-causal: no masked diagonal step), the diagonal step first
(``HOPPER_FWD_WALK=last-first``) and the persistent forward with run-time tiles.

    PYTHONPATH=. python benchmarks/results/h200-hopper/run27-three-softcap/causal_probe.py --out DIR
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch

import sparseflash as sf
from benchmarks import hopper
from benchmarks.hopper import fa4_fn, fa4_function, ours_fn, run_case
from benchmarks.real_batches import ROWS
from benchmarks.run import Timer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--heat", type=float, default=4.0)
    args = ap.parse_args()
    hopper.HEAT_S = args.heat
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    timer = Timer(dev, warmup_ms=100, rep_ms=400, min_reps=10)   # as hopper.py
    fa4 = fa4_function()
    for d in (128, 64):
        H = 2048 // d
        for N in (4096, 16384):
            B = 16384 // N
            layout = sf.compile(sf.dense(), N, block_size=128, causal=True, num_heads=H)
            impls = {"ours": ours_fn(layout, False)}
            if fa4 is not None:
                impls["fa4"] = fa4_fn(fa4, None, B, True)
            if N == 4096:
                tril = sf.compile(sf.from_mask(np.tril(np.ones((N // 128, N // 128), bool))), N,
                                  block_size=128, num_heads=H)
                assert tril.nnz == layout.nnz
                impls["ours-tril-blocks-noncausal"] = ours_fn(tril, False)
                impls["ours-walk-last-first"] = ours_fn(layout, False, settings=dict(HOPPER_FWD_WALK="last-first"))
                impls["ours-persistent-dynamic"] = ours_fn(
                    layout, False, settings=dict(HOPPER_PERSISTENT=True, HOPPER_DYNAMIC_TILES=True))
            flops = 4.0 * d * 128 ** 2 * layout.nnz * B
            run_case(timer, dev, f"dense causal N={N} d={d}", impls, B, H, N, d, flops)
    (out / "rows.json").write_text(json.dumps(ROWS, indent=1))
    ms = {(r["case"], r["impl"], r["pass"]): r["ms"] for r in ROWS}
    fits = []
    # d=128: 2048 tiles of 128 queries in both (B * H * N / 128), ours and FA4 alike
    H, tiles = 16, 2048
    steps = {N: (16384 // N) * H * (N // 128) * (N // 128 + 1) // 2 for N in (4096, 16384)}
    for impl in ("ours", "fa4"):
        for p in ("fwd", "fwd+bwd"):
            a, b = ms.get(("dense causal N=4096 d=128", impl, p)), ms.get(("dense causal N=16384 d=128", impl, p))
            if a is None or b is None:
                continue
            s = (b - a) / (steps[16384] - steps[4096])          # ms per step, whole GPU
            t = (a - steps[4096] * s) / tiles
            fits.append(dict(impl=impl, p=p, step_us_per_sm=round(s * 1e3 * 132, 3),
                             tile_us_per_sm=round(t * 1e3 * 132, 3)))
    (out / "fits.json").write_text(json.dumps(fits, indent=1))
    for f in fits:
        print(json.dumps(f))


if __name__ == "__main__":
    main()
