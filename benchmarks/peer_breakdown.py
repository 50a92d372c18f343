"""Per-kernel GPU time of one forward+backward, ours against FlashAttention-4 on the same
tables, by torch.profiler (run20): where the forward+backward gap is. Same inputs and impls
as ``benchmarks/hopper.py`` (bf16, B·N = 16K dense, B = 1 sparse, H·d = 2048, FA4 given our
block tables). Prints, per case and impl, each kernel's ms per iteration and the total; writes
``peer_breakdown.json``.

    PYTHONPATH=. python benchmarks/peer_breakdown.py --out DIR [--iters 5]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
from benchmarks.bwd_breakdown import kernel_times  # noqa: E402
from benchmarks.hopper import fa4_fn, fa4_function, ours_fn  # noqa: E402

CASES = [  # name, pattern (None: dense), N, d, causal
    ("local(2) N=16384 d=128", sf.local(2), 16384, 128, False),
    ("butterfly N=16384 d=128", sf.butterfly(), 16384, 128, False),
    ("local(8) N=16384 d=64", sf.local(8), 16384, 64, False),
    ("dense causal N=4096 d=128", None, 4096, 128, True),
    ("dense N=16384 d=128", None, 16384, 128, False),
    ("dense N=4096 d=64", None, 4096, 64, False),
]


def case_setup(pattern, N, d, causal, fa4):
    """A case of :data:`CASES` as ``benchmarks/hopper.py`` runs it: ``({"ours": fn, "fa4": fn
    (when ``fa4``, FA4's ``flash_attn_func``, is given)}, (q, k, v, do))``, bf16 on the GPU,
    (B, N, H, d) storage seen as (B, H, N, d), q, k and v requiring grad."""
    H = 2048 // d
    B = 1 if pattern is not None else max(1, 16384 // N)
    layout = sf.compile(pattern or sf.dense(), N, block_size=128, causal=causal, num_heads=H)
    impls = {"ours": ours_fn(layout, False)}
    if fa4 is not None:
        impls["fa4"] = fa4_fn(fa4, None if pattern is None else layout, B, causal)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(B, N, H, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
                   for _ in range(4))
    return impls, (*(t.detach().requires_grad_(True) for t in (q, k, v)), do)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fa4 = fa4_function()
    rows = []
    for name, pattern, N, d, causal in CASES:
        impls, (qg, kg, vg, do) = case_setup(pattern, N, d, causal, fa4)
        for impl, fn in impls.items():
            def step(fn=fn):
                with getattr(fn, "switches", contextlib.nullcontext)():
                    return torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), do)
            mine = [dict(case=name, impl=impl, kernel=key[:90], calls=calls, ms=round(ms, 4))
                    for key, calls, ms in kernel_times(step, args.iters, warmup=3)]
            mine.append(dict(case=name, impl=impl, kernel="TOTAL", calls=0,
                             ms=round(sum(r["ms"] for r in mine), 4)))
            for r in mine:
                print(f"{name:28s} {impl:5s} {r['kernel'][:90]:90s} x{r['calls']:<2d} {r['ms']:8.4f} ms", flush=True)
            rows += mine
    meta = dict(command="PYTHONPATH=. python " + " ".join(sys.argv), torch=torch.__version__,
                gpu=torch.cuda.get_device_name(), iters=args.iters)
    (out / "peer_breakdown.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
