"""One forward+backward per case and impl (ours, and FlashAttention-4 on the same tables when it
imports), for Nsight Compute to profile the backward kernels side by side (stop 38): the same
inputs as ``benchmarks/peer_breakdown.py``. Each impl runs ``--reps`` times (the first call of
a shape compiles); profile with a kernel filter and a launch count, e.g.

    ncu --kernel-name regex:"dkdv|Backward" --launch-skip 2 --launch-count 2 --set full \
        -o DIR/bwd python benchmarks/ncu_bwd_peers.py --cases "dense N=16384 d=128"

(with ``--reps 2`` and two impls the skip of 2 passes the first call of each impl only when the
impls run interleaved: they do, rep by rep).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.hopper import fa4_function  # noqa: E402
from benchmarks.peer_breakdown import CASES, case_setup  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="dense N=16384 d=128",
                    help="';'-separated case names of peer_breakdown.CASES")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-fa4", action="store_true")
    args = ap.parse_args(argv)
    wanted = [c.strip() for c in args.cases.split(";") if c.strip()]
    unknown = sorted(set(wanted) - {c[0] for c in CASES})
    if unknown:
        raise SystemExit(f"--cases: unknown {unknown}; expected names from {[c[0] for c in CASES]}")
    fa4 = None if args.no_fa4 else fa4_function()
    for name, pattern, N, d, causal in (c for c in CASES if c[0] in wanted):
        impls, (qg, kg, vg, do) = case_setup(pattern, N, d, causal, fa4)
        for rep in range(args.reps):
            for impl, fn in impls.items():
                with getattr(fn, "switches", contextlib.nullcontext)():
                    torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), do)
                torch.cuda.synchronize()
                print(f"{name} {impl} rep {rep} done", flush=True)


if __name__ == "__main__":
    main()
