"""The Hopper forward's walk over a row's key blocks (``launch.HOPPER_FWD_WALK``) on dense
causal 16K, d=128, H=16, bf16: forward times (CUDA events, median of ``--reps``) per walk and
conditional-rescale threshold (no modifier, and the causal ALiBi), in one process. ``--once WALK`` runs one forward with that walk (for Nsight Compute).

    PYTHONPATH=. python benchmarks/walk_probe.py [--reps 30]
    ncu --kernel-name regex:hopper_fwd --section SpeedOfLight --section MemoryWorkloadAnalysis \
        python benchmarks/walk_probe.py --once last-first
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
from sparseflash.kernels import launch  # noqa: E402


def inputs(N=16384, H=16, d=128):
    g = torch.Generator(device="cuda").manual_seed(0)
    return tuple(torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))


def timed(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--once", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    q, k, v = inputs()
    N, H = q.shape[2], q.shape[1]
    layout = sf.compile(sf.dense(), N, block_size=128, causal=True, num_heads=H)
    slopes = torch.tensor([2.0 ** (-8 * (h + 1) / H) for h in range(H)], device="cuda")
    if args.once:
        launch.HOPPER_FWD_WALK = args.once
        sf.sparse_attention(q, k, v, layout)
        torch.cuda.synchronize()
        return
    rows = []
    base = None
    cases = [(False, r, w) for r in (8.0, 0.0) for w in ("table", "last-first")]
    cases += [(True, 8.0, w) for w in ("table", "last-first")]
    for alibi, rescale, walk in cases:
        launch.HOPPER_FWD_WALK = walk
        launch.HOPPER_FWD_RESCALE = rescale
        kw = dict(alibi_slopes=slopes) if alibi else {}
        out = sf.sparse_attention(q, k, v, layout, **kw)
        assert torch.isfinite(out).all()
        ms = timed(lambda: sf.sparse_attention(q, k, v, layout, **kw), args.reps)
        base = base or ms
        row = dict(alibi=alibi, rescale=rescale, walk=walk, ms=round(ms, 4), vs_first=round(ms / base, 3))
        rows.append(row)
        print(json.dumps(row), flush=True)
    launch.HOPPER_FWD_WALK = launch.HOPPER_FWD_RESCALE = None
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
