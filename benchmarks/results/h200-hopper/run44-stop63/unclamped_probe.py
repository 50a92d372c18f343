"""Stop 63's probe of launch._HOPPER_BWD_UNCLAMPED (the dK/dV kernel's exponent without its clamp):
on peaked softmaxes (issue 11's scales, d=64 and 128, dense and local|global, causal and not),
does any gradient overflow without the clamp, and how far is dv from the float64 oracle's, with
the clamp and without? A probe, not a test: it prints a table.
    PYTHONPATH=. python benchmarks/results/h200-hopper/run44-stop63/unclamped_probe.py
"""
import itertools
import json
import sys

import torch

import sparseflash as sf
from sparseflash.kernels import launch
from sparseflash.reference import reference_attention

rows = []
g = torch.Generator(device="cuda").manual_seed(0)
for d, scale, (pname, pattern), causal, mag in itertools.product(
        (128, 64), (0.1, 100.0, 1e4, 1e8), (("dense", sf.dense()), ("local(1)|global", sf.local(1) | sf.global_blocks(1))),
        (True, False), (1.0, 30.0)):
    B, H, N = 1, 2, 1000
    q, k, v, do = (torch.randn(B, H, N, d, device="cuda", generator=g).to(torch.bfloat16) for _ in range(4))
    q, k = q * mag, k * mag
    layout = sf.compile(pattern, N, block_size=128, causal=causal, num_heads=H)
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref = reference_attention(q64, k64, v64, layout, scale=scale)[0]
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
    row = dict(d=d, scale=scale, pattern=pname, causal=causal, magnitude=mag)
    for unclamped in (False, True):
        launch._HOPPER_BWD_UNCLAMPED = unclamped
        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
        out = sf.sparse_attention(qg, kg, vg, pattern, block_size=128, causal=causal, scale=scale)
        grads = torch.autograd.grad(out, (qg, kg, vg), do)
        tag = "unclamped" if unclamped else "clamped"
        row[f"{tag}_finite"] = all(bool(torch.isfinite(t).all()) for t in grads)
        for name, gr, r in zip(("dq", "dk", "dv"), grads, ref_grads):
            row[f"{tag}_{name}_rel"] = float((gr.double() - r).norm() / r.norm().clamp_min(1e-30))
    launch._HOPPER_BWD_UNCLAMPED = False
    rows.append(row)
    print(json.dumps(row), flush=True)
bad = [r for r in rows if not r["unclamped_finite"]]
worse = [r for r in rows if r["unclamped_dv_rel"] > 1.5 * r["clamped_dv_rel"] + 1e-3]
print(f"SUMMARY rows {len(rows)}; unclamped non-finite {len(bad)}; unclamped dv worse than 1.5x clamped {len(worse)}; "
      f"clamped non-finite {sum(not r['clamped_finite'] for r in rows)}")
