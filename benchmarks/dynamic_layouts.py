"""Device-built layouts (issue 9): table build time and a whole MoBA-style top-k step, against
FlexAttention on the same blocks.

Suites:

* ``build``: tables for B x H query heads over N tokens (full: 8 x 32 x 64K, block 128,
  k = 16, causal; target <= 0.2 ms on an H200 for both directions). Ours: ``topk_layout`` and
  ``layout_from_block_mask`` (eager, and inside ``torch.compile(fullgraph=True)``), each by
  the Triton build kernels (the default on CUDA) and by the torch chain (the CPU path), and a
  ``check`` row that the two give equal tables (capacity tails included). Flex on
  the same blocks: ``BlockMask.from_kv_blocks`` given the selected indices (its transpose is
  the work), the same with the top-k included, and ``create_block_mask`` over a ``mask_mod``
  that looks the blocks up.
* ``build_gpu``: the build's GPU time alone: the eager call captured in a CUDA graph and
  replayed (capture also fails on any host sync), and the profiler's time per kernel; Flex's
  ``from_kv_blocks`` on the same blocks in the same run (eager: it syncs with the host).
* ``build_tiles``: the build kernels' knobs (``sparseflash.dynamic._ROW_TILE``,
  ``_ROW_WARPS``, ``_COMPACT_ROWS``) swept on the ``build`` case by GPU time (CUDA graph
  replay): pick the fastest before quoting ``build``.
* ``step``: one training step of top-k block attention: mean-pool q and k per block, score =
  pooled_q @ pooled_k^T, keep the 16 best visible key blocks plus the diagonal, attend, and
  take q/k/v gradients; ours (``topk_layout`` + ``sparse_attention``) against the same step
  written with FlexAttention (``from_kv_blocks`` + compiled ``flex_attention``). Before timing,
  our output and gradients are checked against Flex's (max |diff| / max |flex|).

Rows give ms (median), TFLOP/s on computed blocks (4 d b^2 per stored block, x 3.5 with the
backward) and peak GPU memory. A missing or failing peer becomes an ``error`` row, never a
crash. ``--smoke`` runs tiny shapes on the CPU (our torch backend, eager Flex) to check the
script itself; with ``TRITON_INTERPRET=1`` the build kernels' rows run under the interpreter
(else they are ``error`` rows).

    PYTHONPATH=. python benchmarks/dynamic_layouts.py --out DIR [--suites build,build_tiles,step] [--smoke]

Writes ``dynamic_layouts.json`` (rows plus environment: versions, GPU, commit) and
``dynamic_layouts.csv``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

import sparseflash as sf
from sparseflash import dynamic as sf_dynamic
from sparseflash.attention import sparse_attention

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.run import GIB, Timer, environment  # noqa: E402

ROWS = []
FULL = dict(B=8, H=32, N=65536, d=128, bs=128, k=16)
SMOKE = dict(B=2, H=2, N=256, d=32, bs=32, k=2)
TABLES = ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull")


def add(suite, case, impl, pass_name, ms, flops=None, peak_gib=None, note=""):
    row = dict(suite=suite, case=case, impl=impl, **{"pass": pass_name},
               ms=None if ms is None or ms != ms else round(ms, 4),
               tflops=round(flops / ms / 1e9, 1) if flops and ms and ms == ms else None,
               peak_gib=None if peak_gib is None or peak_gib != peak_gib else round(peak_gib, 3),
               note=note)
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def guarded(suite, case, impl, fn):
    """Run one measurement; a missing or failing peer is recorded, not raised."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - one failing peer must not lose the rest
        add(suite, case, impl, "error", None, note=f"{type(exc).__name__}: {str(exc)[:300]}")


def peak_gib(fn, dev):
    if dev.type != "cuda":
        return None
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) / GIB


def flex_api():
    """(flex_attention, BlockMask, create_block_mask), compiled where it pays; raises if Flex is missing."""
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

    torch._dynamo.config.cache_size_limit = 1000
    torch._dynamo.config.recompile_limit = 1000
    return flex_attention, BlockMask, create_block_mask


# ---------------------------------------------------------------------- the same blocks for Flex
def topk_blocks(scores, k, causal):
    """The top-k selection as ``(sel [B, H, nq, k] ascending, valid)``, on Flex's side of the
    comparison (ours does the same inside topk_layout)."""
    nq, nk = scores.shape[-2:]
    if causal:   # N a multiple of the block: block (i, j) is visible iff j <= i
        i = torch.arange(nq, device=scores.device)[:, None]
        scores = scores.masked_fill(torch.arange(nk, device=scores.device)[None, :] > i, float("-inf"))
    value, sel = scores.topk(min(k, nk), dim=-1)
    sel = torch.where(value > float("-inf"), sel, nk).sort(dim=-1).values
    return sel, sel < nk


def flex_block_mask(BlockMask, sel, valid, bs, N, causal, with_diagonal):
    """Flex's BlockMask of the selection (plus the diagonal): partial blocks (the diagonal,
    under causal) in ``kv_*``, the others in ``full_kv_*``; the mask_mod tests the token rule
    on partial blocks (and everywhere on Flex's uncompiled path)."""
    B, H, nq, _ = sel.shape
    dev = sel.device
    i = torch.arange(nq, device=dev).view(1, 1, nq, 1)
    if with_diagonal:
        sel = torch.cat([sel, i.expand(B, H, nq, 1)], -1)
        valid = torch.cat([valid, torch.ones_like(valid[..., :1])], -1)
        sel, order = sel.sort(-1)
        valid = valid.gather(-1, order) & torch.cat(
            [torch.ones_like(valid[..., :1]), sel[..., 1:] != sel[..., :-1]], -1)
    partial = valid & (sel == i) if causal else torch.zeros_like(valid)
    full = valid & ~partial

    def pack(keep):         # Flex wants [B, H, nq, nk] indices, each row's blocks first
        idx = torch.where(keep, sel, nq).sort(-1).values.clamp(max=nq - 1)
        idx = torch.cat([idx, idx.new_zeros(B, H, nq, nq - idx.shape[-1])], -1)
        return keep.sum(-1, dtype=torch.int32), idx.to(torch.int32)

    dense_blocks = torch.zeros(B, H, nq, nq + 1, dtype=torch.bool, device=dev)
    dense_blocks.scatter_(-1, torch.where(valid, sel, nq), True)
    dense_blocks = dense_blocks[..., :nq].contiguous()

    def mask_mod(b, h, q_idx, kv_idx):
        keep = dense_blocks[b, h, q_idx // bs, kv_idx // bs]
        return keep & (kv_idx <= q_idx) if causal else keep

    (kv_num, kv_idx), (full_num, full_idx) = pack(partial), pack(full)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=bs,
                                    mask_mod=mask_mod, seq_lengths=(N, N)), dense_blocks


# ---------------------------------------------------------------------- build
def bench_build(timer, dev, cfg, causal=True):
    B, H, N, bs, k = cfg["B"], cfg["H"], cfg["N"], cfg["bs"], cfg["k"]
    nb = N // bs
    g = torch.Generator(device=dev).manual_seed(0)
    scores = torch.randn(B, H, nb, nb, device=dev, generator=g)
    case = f"B={B} H={H} N={N} block={bs} k={k}{' causal' if causal else ''}"
    layout = sf.topk_layout(scores, k, seq_len=N, block_size=bs, causal=causal)
    mask = torch.zeros(B, H, nb, nb, dtype=torch.bool, device=dev)
    for s in range(B):
        mask[s] = torch.from_numpy(layout.to_dense(seq=s)).to(dev)
    note = f"{layout.nnz:,} blocks"

    def ours(name, fn):
        def run():
            fn(scores if "topk" in name else mask)          # first call: constants, compile
            ms, _ = timer(lambda: fn(scores if "topk" in name else mask))
            add("build", case, name, "build", ms, None, None, note)
        guarded("build", case, name, run)

    def topk_tables(s):
        t = sf.topk_layout(s, k, seq_len=N, block_size=bs, causal=causal)
        return tuple(getattr(t, name) for name in TABLES)

    def mask_tables(m):
        t = sf.layout_from_block_mask(m, seq_len=N, block_size=bs, causal=causal)
        return tuple(getattr(t, name) for name in TABLES)

    for path, kernels in (("triton kernels", True), ("torch chain", False)):
        for name, fn in (("topk_layout", topk_tables), ("layout_from_block_mask", mask_tables)):
            ours(f"ours {name}, {path} (eager)", on_path(kernels, fn))
            ours(f"ours {name}, {path} (torch.compile)",
                 on_path(kernels, torch.compile(fn, fullgraph=True)))
    guarded("build", case, "check kernels vs torch chain",
            lambda: check_paths(case, note, topk_tables, mask_tables, scores, mask))

    def flex():
        _, BlockMask, create_block_mask = flex_api()
        sel, valid = topk_blocks(scores, k, causal)
        ms, _ = timer(lambda: flex_block_mask(BlockMask, sel, valid, bs, N, causal, False))
        add("build", case, "flex BlockMask.from_kv_blocks (given the top-k)", "build", ms, None, None, note)
        ms, _ = timer(lambda: flex_block_mask(BlockMask, *topk_blocks(scores, k, causal), bs, N, causal, False))
        add("build", case, "flex top-k + BlockMask.from_kv_blocks", "build", ms, None, None, note)
        _, dense_blocks = flex_block_mask(BlockMask, sel, valid, bs, N, causal, False)

        def mask_mod(b, h, q_idx, kv_idx):
            keep = dense_blocks[b, h, q_idx // bs, kv_idx // bs]
            return keep & (kv_idx <= q_idx) if causal else keep

        compiled = dev.type == "cuda"
        t0 = time.perf_counter()
        create_block_mask(mask_mod, B, H, N, N, device=dev, BLOCK_SIZE=bs, _compile=compiled)
        first = (time.perf_counter() - t0) * 1e3
        slow = Timer(dev, warmup_ms=0, rep_ms=0, min_reps=3)
        ms, _ = slow(lambda: create_block_mask(mask_mod, B, H, N, N, device=dev, BLOCK_SIZE=bs,
                                               _compile=compiled))
        add("build", case, f"flex create_block_mask (_compile={compiled})", "build", ms, None, None,
            f"{note}; first call {first:.0f} ms")
    guarded("build", case, "flex", flex)


def on_path(kernels, fn):
    """``fn`` with the tables built by the Triton build kernels (True) or the torch chain
    (False); under torch.compile the flag is a guarded global, so each path has its graph."""
    def run(x):
        old = sf_dynamic._BUILD_KERNELS
        sf_dynamic._BUILD_KERNELS = kernels
        try:
            return fn(x)
        finally:
            sf_dynamic._BUILD_KERNELS = old
    return run


def check_paths(case, note, topk_tables, mask_tables, scores, mask):
    """The two paths' tables, compared tensor by tensor (capacity tails included)."""
    same = []
    for fn, x in ((topk_tables, scores), (mask_tables, mask)):
        a, b = on_path(True, fn)(x), on_path(False, fn)(x)
        same.append(all(torch.equal(u, w) for u, w in zip(a, b)))
    verdict = "ok" if all(same) else "FAIL"
    add("build", case, "check kernels vs torch chain", "check", None, None, None,
        f"{note}; tables equal: topk {same[0]}, mask {same[1]}: {verdict}")


def graph_ms(timer, dev, fn):
    """Median GPU time of ``fn`` without the host: captured in a CUDA graph (which fails on
    any host sync) and replayed, L2 flushed before each replay. On the CPU, ``timer(fn)``."""
    fn()
    if dev.type != "cuda":
        return timer(fn)[0]
    torch.cuda.synchronize(dev)
    stream = torch.cuda.Stream(dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):
        fn()                                            # warm the constants on the side stream
    torch.cuda.current_stream(dev).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return timer(graph.replay)[0]


def bench_build_tiles(timer, dev, cfg, causal=True):
    """The build kernels' knobs swept on the ``build`` case (eager ``topk_layout``, and the
    mask for the compaction knob): the row kernel's tile (``_ROW_TILE``), warps
    (``_ROW_WARPS``), the compaction kernel's words per program (``_COMPACT_ROWS``)."""
    B, H, N, bs, k = cfg["B"], cfg["H"], cfg["N"], cfg["bs"], cfg["k"]
    nb = N // bs
    scores = torch.randn(B, H, nb, nb, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    mask = scores > 2.0
    case = f"B={B} H={H} N={N} block={bs} k={k}{' causal' if causal else ''}"
    build = on_path(True, lambda s: sf.topk_layout(s, k, seq_len=N, block_size=bs, causal=causal).fwd_idx)
    build_mask = on_path(True, lambda m: sf.layout_from_block_mask(m, seq_len=N, block_size=bs,
                                                                   causal=causal).fwd_idx)
    knobs = ("_ROW_TILE", "_ROW_WARPS", "_COMPACT_ROWS")
    old = {name: getattr(sf_dynamic, name) for name in knobs}
    sweeps = [("topk_layout", build, scores, dict(_ROW_TILE=t, _ROW_WARPS=w))
              for t, w in ((1024, 1), (2048, 1), (4096, 1), (2048, 2), (4096, 2), (8192, 2), (8192, 4))]
    sweeps += [("layout_from_block_mask", build_mask, mask, dict(_COMPACT_ROWS=c)) for c in (256, 512)]
    try:
        for name, fn, x, setting in sweeps:
            label = ", ".join(f"{key}={value}" for key, value in setting.items())

            def run(fn=fn, x=x, setting=setting, name=name, label=label):
                for key, value in {**old, **setting}.items():
                    setattr(sf_dynamic, key, value)
                ms = graph_ms(timer, dev, lambda: fn(x))
                add("build_tiles", case, f"ours {name}, triton kernels, {label}", "build", ms, None, None,
                    "GPU time (CUDA graph replay)")
            guarded("build_tiles", case, label, run)
    finally:
        for key, value in old.items():
            setattr(sf_dynamic, key, value)


def kernel_times(fn, dev, calls=20):
    """{kernel name (80 characters): (ms per call, launches per call)} of ``fn()``'s GPU
    kernels: the profiler's totals over ``calls`` calls after one warm-up call."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize(dev)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize(dev)
    out = {}
    for ev in prof.key_averages():
        us = (ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total) / calls
        if us > 0:
            out[ev.key[:80]] = (us / 1e3, ev.count // calls)
    return out


def bench_build_gpu(timer, dev, cfg, causal=True):
    """The build's GPU time without the host: the eager call captured in a CUDA graph (which
    also proves it has no host sync) and replayed, L2 flushed before each replay; and the
    profiler's time per kernel of one eager call (mean of 20)."""
    B, H, N, bs, k = cfg["B"], cfg["H"], cfg["N"], cfg["bs"], cfg["k"]
    nb = N // bs
    scores = torch.randn(B, H, nb, nb, device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    layout = sf.topk_layout(scores, k, seq_len=N, block_size=bs, causal=causal)
    mask = torch.zeros(B, H, nb, nb, dtype=torch.bool, device=dev)
    for s in range(B):
        mask[s] = torch.from_numpy(layout.to_dense(seq=s)).to(dev)
    case = f"B={B} H={H} N={N} block={bs} k={k}{' causal' if causal else ''}"
    note = f"{layout.nnz:,} blocks"
    builders = {
        "topk_layout": lambda: sf.topk_layout(scores, k, seq_len=N, block_size=bs, causal=causal).fwd_idx,
        "layout_from_block_mask": lambda: sf.layout_from_block_mask(mask, seq_len=N, block_size=bs,
                                                                    causal=causal).fwd_idx,
    }
    for name, fn in builders.items():
        def graphed(name=name, fn=fn):
            ms = graph_ms(timer, dev, fn)
            add("build_gpu", case, f"ours {name}, triton kernels, CUDA graph replay", "build", ms, None,
                None, f"{note}; GPU time, no host")
        guarded("build_gpu", case, f"ours {name} graph", graphed)

        def profiled(name=name, fn=fn):
            total = 0.0
            for key, (ms, launches) in kernel_times(fn, dev).items():
                total += ms * 1e3
                add("build_gpu", case, f"ours {name}: kernel {key}", "build", ms, None, None,
                    f"{launches} launch(es) per call; profiler, mean of 20 calls")
            add("build_gpu", case, f"ours {name}: sum of kernels", "build", total / 1e3, None, None,
                "profiler, mean of 20 calls, L2 warm")
        guarded("build_gpu", case, f"ours {name} profile", profiled)

    def flex():
        # Flex's BlockMask construction syncs with the host, so it is timed eagerly (events,
        # L2 flushed), as the build suite does, beside our GPU times in the same run
        _, BlockMask, _ = flex_api()
        sel, valid = topk_blocks(scores, k, causal)
        ms, _ = timer(lambda: flex_block_mask(BlockMask, sel, valid, bs, N, causal, False))
        add("build_gpu", case, "flex BlockMask.from_kv_blocks (given the top-k), eager", "build", ms,
            None, None, note)
        ms, _ = timer(lambda: flex_block_mask(BlockMask, *topk_blocks(scores, k, causal), bs, N, causal, False))
        add("build_gpu", case, "flex top-k + BlockMask.from_kv_blocks, eager", "build", ms, None, None, note)
    guarded("build_gpu", case, "flex", flex)


# ---------------------------------------------------------------------- step
def bench_step(timer, dev, cfg, dtype, causal=True):
    B, H, N, d, bs, topk = cfg["B"], cfg["H"], cfg["N"], cfg["d"], cfg["bs"], cfg["k"]
    nb = N // bs
    g = torch.Generator(device=dev).manual_seed(1)
    q, kk, v, do = (torch.randn(B, H, N, d, device=dev, dtype=dtype, generator=g) for _ in range(4))
    include = sf.local(0)                  # MoBA: a query block always sees its own block
    case = f"MoBA top-k step B={B} H={H} N={N} d={d} block={bs} k={topk}+diagonal{' causal' if causal else ''}"

    def gate(q, k):                        # [B, H, nb, nb], no gradient (a selection)
        pq = q.detach().view(B, H, nb, bs, d).float().mean(3)
        pk = k.detach().view(B, H, nb, bs, d).float().mean(3)
        return pq @ pk.transpose(-1, -2)

    def ours(q, k, v):
        layout = sf.topk_layout(gate(q, k), topk, seq_len=N, block_size=bs, causal=causal,
                                include=include)
        return sparse_attention(q, k, v, layout)

    layout = sf.topk_layout(gate(q, kk), topk, seq_len=N, block_size=bs, causal=causal, include=include)
    flops = 4.0 * d * bs * bs * layout.nnz
    impls = {"ours": ours}
    try:
        flex_attention, BlockMask, _ = flex_api()
        flex_attn = torch.compile(flex_attention, dynamic=False) if dev.type == "cuda" else flex_attention

        def flex(q, k, v):
            sel, valid = topk_blocks(gate(q, k), topk, causal)
            block_mask, _ = flex_block_mask(BlockMask, sel, valid, bs, N, causal, True)
            return flex_attn(q, k, v, block_mask=block_mask)
        impls["flex"] = flex
    except Exception as exc:  # noqa: BLE001
        add("step", case, "flex", "error", None, note=f"{type(exc).__name__}: {str(exc)[:300]}")

    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, kk, v))
    check_against_flex(case, impls, (q, kk, v), (qg, kg, vg), do, dtype)
    for name, fn in impls.items():
        def fwd(fn=fn):
            with torch.no_grad():
                return fn(q, kk, v)

        def step(fn=fn):
            out = fn(qg, kg, vg)
            return torch.autograd.grad(out, (qg, kg, vg), do)

        def run(name=name, fwd=fwd, step=step):
            ms, _ = timer(fwd)
            add("step", case, name, "fwd", ms, flops, peak_gib(fwd, dev), f"{layout.nnz:,} blocks")
            ms, _ = timer(step)
            add("step", case, name, "fwd+bwd", ms, 3.5 * flops, peak_gib(step, dev))
        guarded("step", case, name, run)


def check_against_flex(case, impls, inputs, grad_inputs, do, dtype):
    """Our output (and gradients, where Flex has a backward: not on the CPU) against Flex's on
    the same blocks: max |diff| / max |flex| per tensor, in one ``check`` row."""
    if "flex" not in impls:
        return
    tol = 2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
    errs = {}

    def rel(a, b):
        return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()

    with torch.no_grad():
        errs["out"] = rel(impls["ours"](*inputs), impls["flex"](*inputs))
    try:
        got = {name: torch.autograd.grad(impls[name](*grad_inputs), grad_inputs, do)
               for name in ("ours", "flex")}
        errs.update(zip(("dq", "dk", "dv"), map(rel, got["ours"], got["flex"])))
    except Exception as exc:  # noqa: BLE001 - e.g. Flex has no backward on the CPU
        errs["grads"] = f"not checked ({type(exc).__name__})"
    worst = max(e for e in errs.values() if isinstance(e, float))
    verdict = "ok" if worst <= tol else f"FAIL (> {tol:g})"
    add("step", case, "check ours vs flex", "check", None, None, None,
        "max|diff|/max|flex|: " + ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in errs.items()) + f": {verdict}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--suites", default="build,step")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the script")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.dtype = "float32" if args.smoke else "bfloat16"
    args.tiny, args.quick, args.estimate_device = args.smoke, False, None
    dev = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    cfg = SMOKE if args.smoke else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = environment(args, dev)
    meta["command"] = "PYTHONPATH=. python benchmarks/dynamic_layouts.py " + " ".join(args.argv)
    meta["shapes"] = cfg
    timer = (Timer(dev, warmup_ms=0, rep_ms=0, min_reps=2) if args.smoke
             else Timer(dev, warmup_ms=100, rep_ms=400, min_reps=10))
    dtype = torch.float32 if args.smoke else torch.bfloat16
    for suite in args.suites.split(","):
        guarded(suite, "-", suite, {"build": lambda: bench_build(timer, dev, cfg),
                                    "build_gpu": lambda: bench_build_gpu(timer, dev, cfg),
                                    "build_tiles": lambda: bench_build_tiles(timer, dev, cfg),
                                    "step": lambda: bench_step(timer, dev, cfg, dtype)}[suite])
    (out / "dynamic_layouts.json").write_text(json.dumps({"meta": meta, "rows": ROWS}, indent=1))
    with open(out / "dynamic_layouts.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        w.writeheader()
        w.writerows(ROWS)
    print(f"wrote {out / 'dynamic_layouts.json'} and {out / 'dynamic_layouts.csv'}")


if __name__ == "__main__":
    main()
