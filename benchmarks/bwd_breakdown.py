"""Per-kernel GPU time of one forward+backward with the Hopper forward, by torch.profiler, for
the two dK/dV kernels: the Hopper one (``USE_HOPPER_BWD=True``) and the portable one
(``False``), with the portable dQ kernel (``HOPPER_FUSED_DQ=False``); ``--fused`` adds the
Hopper dK/dV kernel that computes dQ itself (the default dispatch on Hopper).

Usage: ``PYTHONPATH=. python benchmarks/bwd_breakdown.py --out DIR``; writes
``bwd_breakdown.json`` (rows: case, variant, kernel, ms per iteration) and prints a table.
``--dropout P``: every call with ``dropout_p=P`` (and, for the split of its cost, the same
cases without it as variant ``... p=0``). ``--softcap C``: every call with ``softcap=C``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
from benchmarks.real_batches import launch_switches, rel_err  # noqa: E402

CASES = [  # (name, pattern, N, d, causal, B)
    ("dense", sf.dense(), 16384, 128, False, 1),
    ("dense causal", sf.dense(), 16384, 128, True, 1),
    ("dense causal 4K", sf.dense(), 4096, 128, True, 4),
    ("local(8)", sf.local(8), 16384, 128, False, 1),
    ("local(2)", sf.local(2), 16384, 128, False, 1),
    ("bigbird(3,2,3)", sf.bigbird(3, 2, 3), 16384, 128, False, 1),
    ("dense d=64", sf.dense(), 4096, 64, False, 4),
]
VARIANTS = {"hopper dkdv": dict(USE_HOPPER_BWD=True, HOPPER_FUSED_DQ=False),
            "portable dkdv": dict(USE_HOPPER_BWD=False)}
# --fused: also the Hopper dK/dV kernel that computes dQ itself (``launch.HOPPER_FUSED_DQ``)
# --regs N: also the Hopper dK/dV kernel with N registers per consumer thread, causal or not
# (``launch._HOPPER_BWD_REGS``)


def kernel_times(step, iters: int, warmup: int = 2):
    """GPU time an iteration of each kernel that ``step()`` launches (torch.profiler over
    ``iters`` calls after ``warmup`` untimed ones): ``(name, calls an iteration, ms)``, heaviest
    first."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    times = [(evt.key, evt.count // iters, evt.device_time_total / 1e3 / iters)
             for evt in prof.key_averages() if evt.device_time_total > 0]
    return sorted(times, key=lambda t: -t[2])


def _names(text: str):
    """Comma-separated names; commas inside parentheses (``bigbird(3,2,3)``) do not split."""
    return [n.strip() for n in re.split(r",(?![^()]*\))", text) if n.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--regs", type=int, default=0, help="also the Hopper dK/dV kernel at this register count")
    ap.add_argument("--fused", action="store_true", help="also the Hopper dK/dV kernel with dQ fused in")
    ap.add_argument("--variants", default="", help="comma-separated variant names to run (default: all)")
    ap.add_argument("--cases", default="", help="comma-separated case names to run (default: all)")
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout_p of every call (0: none)")
    ap.add_argument("--softcap", type=float, default=0.0, help="softcap of every call (0: none)")
    ap.add_argument("--stats-modes", default="", help="also the Hopper dK/dV kernel with these "
                    "launch.HOPPER_BWD_STATS values, e.g. cpasync,load")
    args = ap.parse_args(argv)
    # name -> (launch switches, dropout_p)
    variants = {name: (sw, args.dropout) for name, sw in VARIANTS.items()}
    if args.fused:
        variants["hopper fused dq"] = (dict(USE_HOPPER_BWD=True, HOPPER_FUSED_DQ=True), args.dropout)

    if args.dropout:
        variants["hopper dkdv p=0"] = (dict(USE_HOPPER_BWD=True, HOPPER_FUSED_DQ=False), 0.0)
    if args.regs:
        variants[f"hopper dkdv r{args.regs}"] = (
            dict(USE_HOPPER_BWD=True, _HOPPER_BWD_REGS={"plain": args.regs, "causal": args.regs}),
            args.dropout)
    for mode in filter(None, args.stats_modes.split(",")):
        variants[f"hopper dkdv, stats {mode}"] = (dict(USE_HOPPER_BWD=True, HOPPER_BWD_STATS=mode),
                                                  args.dropout)
    if args.variants:
        keep = _names(args.variants)
        variants = {name: v for name, v in variants.items() if name in keep}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, pattern, N, d, causal, B in CASES:
        if args.cases and name not in _names(args.cases):
            continue
        H = 2048 // d
        layout = sf.compile(pattern, N, block_size=128, causal=causal, num_heads=H)
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v, do = (torch.randn(B, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
        q, k, v = (t.requires_grad_(True) for t in (q, k, v))
        first = {}
        for variant, (switches, p) in variants.items():
            with launch_switches(USE_HOPPER=True, **switches):
                def step():
                    torch.manual_seed(1)            # the same dropout mask in every variant
                    return torch.autograd.grad(sf.sparse_attention(q, k, v, layout, dropout_p=p,
                                                                softcap=args.softcap), (q, k, v), do)
                grads = step()
                # each variant's gradients against the first variant's with the same dropout_p
                if p in first:
                    diff = max(rel_err(a, b) for a, b in zip(grads, first[p]))
                    print(f"{name:15s} {variant:26s} max|grad - first's|/max|first's| {diff:.2e}")
                    rows.append(dict(case=name, variant=variant, kernel="grad rel diff", rel_diff=diff))
                else:
                    first[p] = grads
                times = kernel_times(step, args.iters)
            mine = [dict(case=name, variant=variant, kernel=key[:70], ms=round(ms, 4)) for key, _, ms in times]
            mine.append(dict(case=name, variant=variant, kernel="TOTAL", ms=round(sum(r["ms"] for r in mine), 4)))
            for r in mine:
                print(f"{name:15s} {variant:26s} {r['kernel']:70s} {r['ms']:8.4f} ms", flush=True)
            rows += mine
    meta = dict(command="PYTHONPATH=. python " + " ".join(sys.argv), torch=torch.__version__,
                gpu=torch.cuda.get_device_name(), iters=args.iters)
    (out / "bwd_breakdown.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))


if __name__ == "__main__":
    main()
