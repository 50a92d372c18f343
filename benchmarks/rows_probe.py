"""Probe: the Gluon build kernels (kernels/build_gluon.py) against the ``tl`` ones.

Checks that both give the torch chain's tables (valid entries; the kernels leave capacity
tails unwritten) on awkward cases for four settings of the Gluon kernels (lanes per row,
warps, the compaction's lanes), then times ``topk_layout`` at the issue's size (8 x 32 heads
x 64K tokens, block 128, k = 16, causal, fp32 and bf16 scores) by CUDA-graph replay for the
``tl`` kernels and a sweep of the Gluon settings (``KNOBS``), with the profiler's time per
kernel. Writes ``rows_probe.json`` into ``--out``.

    PYTHONPATH=. python benchmarks/rows_probe.py --out DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparseflash as sf  # noqa: E402
from sparseflash import dynamic as D  # noqa: E402
from benchmarks.pieces_probe import write_probe  # noqa: E402
from benchmarks.run import Timer  # noqa: E402
from benchmarks.dynamic_layouts import graph_ms, kernel_times  # noqa: E402

ROWS = []


def add(**row):
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def tables(layout):
    fp, bp = int(layout.fwd_ptr[-1]), int(layout.bwd_ptr[-1])
    return [layout.fwd_ptr, layout.fwd_idx[:fp], layout.fwd_nfull, layout.bwd_ptr,
            layout.bwd_idx[:bp], layout.bwd_nfull]


def build(scores, k, gluon, chain=False, mask=False, **kw):
    old = D._ROW_GLUON, D._BUILD_KERNELS
    D._ROW_GLUON, D._BUILD_KERNELS = gluon, (False if chain else True)
    try:
        if mask:
            kw.pop("include", None)
            return sf.layout_from_block_mask(scores, **kw)
        return sf.topk_layout(scores, k, **kw)
    finally:
        D._ROW_GLUON, D._BUILD_KERNELS = old


def check(dev):
    g = torch.Generator(device=dev).manual_seed(1)
    cases = [
        ("fp32 causal 64 blocks", dict(B=2, H=3, N=64 * 128, bs=128, k=5, causal=True, dtype=torch.float32)),
        ("bf16 non-causal, ties", dict(B=2, H=2, N=40 * 64, bs=64, k=7, causal=False, dtype=torch.bfloat16,
                                      ties=True)),
        ("fp16 kv_len > seq_len causal", dict(B=1, H=4, N=1000, kv=3000, bs=64, k=6, causal=True,
                                             dtype=torch.float16)),
        ("fp32 include local|global, -inf", dict(B=3, H=2, N=100 * 32, bs=32, k=4, causal=True,
                                               dtype=torch.float32, include=True, ninf=True)),
        ("fp32 k > visible, 1 head shared", dict(B=2, H=1, N=9 * 128, bs=128, k=50, causal=True,
                                                dtype=torch.float32)),
        ("fp32 512x512 causal k16", dict(B=1, H=4, N=512 * 128, bs=128, k=16, causal=True,
                                         dtype=torch.float32)),
        ("fp32 2048 blocks non-causal", dict(B=1, H=2, N=2048 * 16, bs=16, k=16, causal=False,
                                             dtype=torch.float32)),
        ("bf16 ties everywhere causal", dict(B=1, H=2, N=300 * 128, bs=128, k=16, causal=True,
                                             dtype=torch.bfloat16, ties=True)),
    ]
    for name, c in cases:
        kv = c.get("kv", c["N"])
        geo = D._Geometry(c["N"], kv, c["bs"], c["causal"])
        s = torch.randn(c["B"], c["H"], geo.nq, geo.nk, device=dev, generator=g)
        if c.get("ties"):
            s = (s * 2).round()
        if c.get("ninf"):
            s = s.masked_fill(torch.rand(s.shape, device=dev, generator=g) < 0.3, float("-inf"))
        s = s.to(c["dtype"])
        kw = dict(seq_len=c["N"], kv_len=kv, block_size=c["bs"], causal=c["causal"])
        if c.get("include"):
            kw["include"] = sf.local(0) | sf.global_blocks(1)
        try:
            ref = tables(build(s, c["k"], False, chain=True, **kw))
            tl_ = tables(build(s, c["k"], False, **kw))
            ok_tl = all(torch.equal(a, b) for a, b in zip(ref, tl_))
            ok_gl = {}
            old = knobs()
            for kn in (dict(_GLUON_TPR=1, _GLUON_WARPS=4, _GLUON_TRANSPOSE=False, _GLUON_COMPACT_WARPS=4),
                       dict(_GLUON_TPR=2, _GLUON_WARPS=1),
                       dict(_GLUON_TPR=4, _GLUON_WARPS=1, _GLUON_COMPACT_LANES=None),
                       dict(_GLUON_TPR=8, _GLUON_WARPS=4, _GLUON_COMPACT_LANES=2, _GLUON_COMPACT_WARPS=2)):
                set_knobs(kn)
                try:
                    gl_ = tables(build(s, c["k"], True, **kw))
                finally:
                    set_knobs(old)
                ok_gl[",".join(f"{a[7:]}={b}" for a, b in kn.items())] = all(
                    torch.equal(a, b) for a, b in zip(ref, gl_))
            # the mask path through the Gluon transpose and compaction (the default knobs; the
            # label is the earlier runs')
            m = s > 0.5
            mref = tables(build(m, None, False, chain=True, mask=True, **kw))
            mgl = tables(build(m, None, None, mask=True, **kw))
            ok_gl["mask trTrue"] = all(torch.equal(a, b) for a, b in zip(mref, mgl))
            add(kind="check", case=name, tl_equals_chain=ok_tl, gluon_equals_chain=ok_gl,
                verdict="ok" if ok_tl and all(ok_gl.values()) else "FAIL")
        except Exception as e:  # noqa: BLE001
            add(kind="check", case=name, verdict=f"ERROR {type(e).__name__}: {str(e)[:400]}")


def profile(fn, dev):
    return {key[:60]: round(ms, 4) for key, (ms, _) in kernel_times(fn, dev).items()}


def timing(dev):
    B, H, N, bs, k = 8, 32, 65536, 128, 16
    timer = Timer(dev, warmup_ms=100, rep_ms=400, min_reps=10)
    nb = N // bs
    scores = torch.randn(B, H, nb, nb, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    variants = [("tl", False, {})]
    for tpr in (2, 4):
        variants.append((f"gluon TPR={tpr}", True, dict(_GLUON_TPR=tpr)))
    for lanes, cw in ((None, 1), (16, 2), (8, 1), (4, 1), (4, 2), (4, 4), (2, 1), (2, 2), (1, 1)):
        variants.append((f"gluon TPR=4 compaction {lanes or 'W'} lanes {cw} warps", True,
                         dict(_GLUON_TPR=4, _GLUON_COMPACT_LANES=lanes, _GLUON_COMPACT_WARPS=cw)))
    variants += [("gluon TPR=4 2 warps", True, dict(_GLUON_TPR=4, _GLUON_WARPS=2)),
                 ("gluon TPR=8", True, dict(_GLUON_TPR=8))]
    old = knobs()
    for dtype in (torch.float32, torch.bfloat16):
        s = scores.to(dtype)
        for name, gluon, kn in variants:
            if dtype == torch.bfloat16 and name not in ("tl", "gluon TPR=2", "gluon TPR=4", "gluon TPR=8"):
                continue
            try:
                set_knobs(kn)
                fn = lambda: build(s, k, gluon, seq_len=N, block_size=bs, causal=True).fwd_idx  # noqa: E731
                ms = graph_ms(timer, dev, fn)
                kernels = profile(fn, dev) if gluon else {}
                add(kind="time", case=f"B={B} H={H} N={N} block={bs} k={k} causal {str(dtype)[6:]}",
                    variant=name, graph_ms=round(ms, 4), kernels_ms=kernels)
            except Exception as e:  # noqa: BLE001
                add(kind="time", variant=name, error=f"{type(e).__name__}: {str(e)[:400]}")
            finally:
                set_knobs(old)


def timing_widths(dev):
    """``topk_layout`` (k = 16, causal, fp32, 32 heads) at grids of 512 to 4096 key blocks, with
    the ``tl`` kernels against the default (Gluon on sm_90 up to ``_GLUON_ROWS_MAX_NK`` key
    blocks: where its limit should be); the two paths' tables compared (each was checked
    against the torch chain above); 1000 blocks is the row kernel's masked (non power of two)
    path."""
    timer = Timer(dev, warmup_ms=100, rep_ms=300, min_reps=10)
    for nb, B in ((512, 8), (1000, 2), (1024, 2), (2048, 1), (4096, 1), (8192, 1)):
        H, bs, k = 32, 128, 16
        N = nb * bs
        scores = torch.randn(B, H, nb, nb, device=dev, generator=torch.Generator(device=dev).manual_seed(nb))
        case = f"B={B} H={H} blocks={nb} k={k} causal float32"
        try:
            got = {}
            for name, gluon in (("tl", False), ("default", None)):
                def fn(s=scores, gluon=gluon, N=N):
                    return build(s, k, gluon, seq_len=N, block_size=bs, causal=True).fwd_idx
                got[name] = tables(build(scores, k, gluon, seq_len=N, block_size=bs, causal=True))
                ms = graph_ms(timer, dev, fn)
                add(kind="width", case=case, variant=name, graph_ms=round(ms, 4),
                    kernels_ms=profile(fn, dev))
            add(kind="width check", case=case,
                verdict="ok" if all(torch.equal(a, b) for a, b in zip(got["tl"], got["default"])) else "FAIL")
        except Exception as e:  # noqa: BLE001
            add(kind="width", case=case, error=f"{type(e).__name__}: {str(e)[:400]}")
        del scores, got
        torch.cuda.empty_cache()


KNOBS = ("_GLUON_WARPS", "_GLUON_TPR", "_GLUON_TRANSPOSE", "_GLUON_COMPACT_WARPS", "_GLUON_COMPACT_LANES")


def knobs():
    return {n: getattr(D, n) for n in KNOBS}


def set_knobs(kn):
    for n, v in kn.items():
        assert n in KNOBS, n
        setattr(D, n, v)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--widths", action="store_true", help="only the grid widths sweep (timing_widths)")
    args = p.parse_args()
    dev = torch.device("cuda")
    if args.widths:
        timing_widths(dev)
        write_probe("rows_probe", args.out, ROWS, dev, dtype="float32")
        return
    if not args.skip_check:
        check(dev)
    timing(dev)
    write_probe("rows_probe", args.out, ROWS, dev, dtype="float32,bfloat16")


if __name__ == "__main__":
    main()
