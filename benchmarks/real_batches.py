"""Benchmarks of real batches (issue 8), side by side with the peers in one run:

* ``docs``: packed-document training. 16 documents of random lengths totalling 64K tokens,
  ``local(3) | global_blocks(1)`` per document, causal, forward+backward (and forward), against
  FlexAttention with a document ``mask_mod`` that encodes the same token mask.
* ``decode``: B=8, 32 query heads, 8 KV heads, caches of 8K, 32K and 128K tokens,
  ``local(8) | global_blocks(1)`` causal, one query per sequence, against FlexAttention's
  decode path on the same mask and dense SDPA over the whole cache; plus the host time per
  step (wall time of back-to-back calls when the GPU is not the bottleneck) and that of two
  bare kernel launches for comparison.
* ``window``: ``window_size=(4096, 0)`` at 64K, causal, forward+backward, against
  FlexAttention's sliding-window mask.

Every case checks our output against the peer's (max |diff| / max |peer|) before timing; the
impls of a case are then timed interleaved after a heat phase (benchmarks/timing.py, since
stop 36; each time the mean of 2 rounds, the second reversed, the rounds in the note). FLOPs
count computed (query, key) blocks only: 4 * d * b^2 per stored block (x 2.5 more for the
backward). Usage: ``PYTHONPATH=. python benchmarks/real_batches.py --out DIR``; writes
``real_batches.json``, ``real_batches.csv`` and ``real_batches.png``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import sparseflash as sf
from sparseflash.attention import resolve_layout, sparse_attention

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import timing  # noqa: E402
from benchmarks.run import GIB, Timer, environment  # noqa: E402

ROWS = []


def add(suite, case, impl, pass_name, ms, flops, peak_gib, note=""):
    row = dict(suite=suite, case=case, impl=impl, **{"pass": pass_name}, ms=round(ms, 4),
               tflops=round(flops / ms / 1e9, 1) if flops and ms == ms else None,
               peak_gib=None if peak_gib is None else round(peak_gib, 3), note=note)
    ROWS.append(row)
    print(json.dumps(row), flush=True)


@contextlib.contextmanager
def launch_switches(**values):
    """``sparseflash.kernels.launch`` module settings (USE_HOPPER, USE_HOPPER_BWD,
    _HOPPER_STAGES, ...) set for the block and restored after it. Hold it around a whole timed
    step: autograd runs the backward after the forward has returned, and reads them then."""
    from sparseflash.kernels import launch

    old = {name: getattr(launch, name) for name in values}
    for name, value in values.items():
        setattr(launch, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(launch, name, value)


def parse_launch_settings(text: str) -> dict:
    """``--set``'s ``NAME=VALUE[;NAME=VALUE...]`` (benchmarks/hopper.py, benchmarks/ncu_fwd.py) as
    ``{NAME: value}``, each NAME a ``sparseflash.kernels.launch`` value and each VALUE a Python
    literal; a ValueError naming ``text`` otherwise."""
    import ast

    from sparseflash.kernels import launch

    values = {}
    for pair in text.split(";"):
        name, sep, value = pair.partition("=")
        if sep and hasattr(launch, name):
            try:
                values[name] = ast.literal_eval(value)
                continue
            except (ValueError, SyntaxError):
                pass
        raise ValueError(f"--set wants NAME=VALUE[;NAME=VALUE...] with NAME a sparseflash.kernels.launch "
                         f"value and VALUE a Python literal, got {text!r}")
    return values


def peak(fn, dev):
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) / GIB


def rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6)).item()


def block_flops(layout, d, batch=1, backward=False):
    return 4.0 * d * layout.block_size ** 2 * layout.nnz * batch * (3.5 if backward else 1.0)


def flex_fn():
    from torch.nn.attention.flex_attention import flex_attention
    torch._dynamo.config.cache_size_limit = 1000
    torch._dynamo.config.recompile_limit = 1000
    return torch.compile(flex_attention, dynamic=False)


def timed_pair(timer, suite, case, impls, q, k, v, do, flops_fwd, flops_bwd, dev, check=True):
    """Time forward and forward+backward of each impl (name -> fn(q, k, v)) after checking
    the outputs against the last impl's, the impls interleaved after a heat phase
    (benchmarks/timing.py; each time the mean of the rounds, in the note)."""
    outs = {name: fn(q, k, v) for name, fn in impls.items()}
    ref_name = list(impls)[-1]
    notes = {name: "" if name == ref_name else f"max|diff|/max|{ref_name}| = {rel_err(out, outs[ref_name]):.2e}"
             for name, out in outs.items()}
    del outs
    res = timing.interleaved(timer, dev, [(name, timing.passes(fn, q, k, v, do), contextlib.nullcontext)
                                          for name, fn in impls.items()],
                             rounds=timing.ROUNDS, heat_s=timing.gpu_heat(dev, timing.HEAT_S), peak=peak)
    for i, (p, flops) in enumerate((("fwd", flops_fwd), ("fwd+bwd", flops_bwd))):
        for name in impls:
            times, peaks = res[name]
            note = "; ".join(x for x in ((notes[name] if i == 0 else ""), timing.rounds_note(times[i])) if x)
            add(suite, case, name, p, timing.mean(times[i]), flops, peaks[i], note)


# ---------------------------------------------------------------------- packed documents
def bench_docs(timer, dev, dtype, H=16, d=128, total=65536, ndocs=16, bs=128, seed=0):
    from torch.nn.attention.flex_attention import create_block_mask

    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, total), ndocs - 1, replace=False))
    lens = np.diff(np.concatenate([[0], cuts, [total]]))
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lens)]), dtype=torch.int32, device=dev)
    w = 3
    pattern = sf.local(w) | sf.global_blocks(1)
    layout = resolve_layout(pattern, seq_len=total, kv_len=total, num_heads=H, block_size=bs, causal=True,
                            cu_seqlens=tuple(cu.tolist()), cu_seqlens_k=tuple(cu.tolist()))
    doc = torch.repeat_interleave(torch.arange(ndocs, device=dev), torch.as_tensor(lens, device=dev))
    start = cu[:-1].long()[doc]

    def doc_mask(b, h, q_idx, kv_idx):
        same = doc[q_idx] == doc[kv_idx]
        bq, bk = (q_idx - start[q_idx]) // bs, (kv_idx - start[kv_idx]) // bs
        keep = ((bq - bk).abs() <= w) | (bq == 0) | (bk == 0)
        return same & (kv_idx <= q_idx) & keep

    t0 = time.perf_counter()
    block_mask = create_block_mask(doc_mask, 1, None, total, total, device=dev, BLOCK_SIZE=bs, _compile=True)
    torch.cuda.synchronize(dev)
    mask_ms = (time.perf_counter() - t0) * 1e3
    flex = flex_fn()
    g = torch.Generator(device=dev).manual_seed(seed)
    q, k, v, do = (torch.randn(1, H, total, d, device=dev, dtype=dtype, generator=g) for _ in range(4))
    impls = {
        "sparseflash": lambda q, k, v: sparse_attention(q, k, v, pattern, causal=True, cu_seqlens=cu),
        "flex": lambda q, k, v: flex(q, k, v, block_mask=block_mask),
    }
    case = f"16 docs, 64K tokens, {pattern}, causal, H={H}, d={d}"
    timed_pair(timer, "docs", case, impls, q, k, v, do, block_flops(layout, d), block_flops(layout, d, backward=True), dev)
    add("docs", case, "flex create_block_mask (compiled, first call)", "setup", mask_ms, None, None,
        f"doc lengths {lens.tolist()}; our layout: {layout.nnz} blocks, {layout.num_partial} partial")


# ---------------------------------------------------------------------- decode
def bench_decode(timer, dev, dtype, B=8, H=32, Hkv=8, d=128, bs=128, lengths=(8192, 32768, 131072)):
    from torch.nn.attention.flex_attention import create_block_mask

    w = 8
    pattern = sf.local(w) | sf.global_blocks(1)
    flex = flex_fn()
    cap = max(lengths)
    g = torch.Generator(device=dev).manual_seed(1)
    k_cache = torch.randn(B, Hkv, cap, d, device=dev, dtype=dtype, generator=g)
    v_cache = torch.randn(B, Hkv, cap, d, device=dev, dtype=dtype, generator=g)
    for L in lengths:
        q = torch.randn(B, H, 1, d, device=dev, dtype=dtype, generator=g)
        k, v = k_cache[:, :, :L], v_cache[:, :, :L]
        qb = (L - 1) // bs

        def decode_mask(b, h, q_idx, kv_idx, qb=qb):
            kb = kv_idx // bs
            return ((qb - kb).abs() <= w) | (kb == 0) | (qb == 0)

        bm = create_block_mask(decode_mask, None, None, 1, L, device=dev, BLOCK_SIZE=bs)
        ours = lambda: sparse_attention(q, k, v, pattern, causal=True)
        impls = {
            "sparseflash": ours,
            "flex": lambda: flex(q, k, v, block_mask=bm, enable_gqa=True),
            "sdpa dense (whole cache)": lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
        }
        out_ours, out_flex = ours(), impls["flex"]()
        layout = sf.compile(pattern, 1, kv_len=L, block_size=bs, causal=True)
        keys = int(layout.to_token_mask().sum())
        flops = 4.0 * d * keys * B * H                      # one query row per head
        notes = {name: f"max|diff|/max|flex| = {rel_err(fn(), out_flex):.2e}" if name != "flex"
                 else f"{keys} keys visible" for name, fn in impls.items()}
        res = timing.interleaved(timer, dev, [(name, (fn,), contextlib.nullcontext) for name, fn in impls.items()],
                                 rounds=timing.ROUNDS, heat_s=timing.gpu_heat(dev, timing.HEAT_S), peak=peak)
        for name in impls:
            times, peaks = res[name]
            add("decode", f"B={B} Hq={H} Hkv={Hkv} d={d} cache {L // 1024}K", name, "fwd", timing.mean(times[0]),
                flops if "dense" not in name else 4.0 * d * L * B * H, peaks[0],
                f"{notes[name]}; {timing.rounds_note(times[0])}")
        # host time per step: back-to-back calls, GPU not the bottleneck (one sync per batch
        # of calls); the median over 9 batches of 100, since one batch is noisy on a shared host
        for name, fn in (("sparseflash", ours), ("flex", impls["flex"])):
            add("decode", f"B={B} Hq={H} Hkv={Hkv} d={d} cache {L // 1024}K", name, "host us/step",
                host_us(fn, dev), None, None, "median over 9 batches of 100 back-to-back calls")
    # two bare kernel launches (what any implementation's decode step must pay at least)
    x = torch.zeros(16, device=dev)

    def two_launches():
        x.add_(1.0)
        x.mul_(1.0)
    add("decode", "two bare launches", "torch add_ + mul_", "host us/step", host_us(two_launches, dev), None, None,
        "median over 9 batches of 100 back-to-back calls")


def host_us(fn, dev, batches=9, calls=100):
    for _ in range(20):
        fn()
    torch.cuda.synchronize(dev)
    per_call = []
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - t0) / calls * 1e6)
        torch.cuda.synchronize(dev)
    return float(np.median(per_call))


# ---------------------------------------------------------------------- sliding window
def bench_window(timer, dev, dtype, H=16, d=128, N=65536, window=4096, bs=128):
    from torch.nn.attention.flex_attention import create_block_mask

    def sliding(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (q_idx - kv_idx <= window)

    bm = create_block_mask(sliding, None, None, N, N, device=dev, BLOCK_SIZE=bs, _compile=True)
    flex = flex_fn()
    layout = sf.compile(sf.dense(), N, block_size=bs, causal=True, window_size=(window, 0), num_heads=H)
    g = torch.Generator(device=dev).manual_seed(2)
    q, k, v, do = (torch.randn(1, H, N, d, device=dev, dtype=dtype, generator=g) for _ in range(4))
    impls = {
        "sparseflash": lambda q, k, v: sparse_attention(q, k, v, sf.dense(), causal=True, window_size=(window, 0)),
        "flex": lambda q, k, v: flex(q, k, v, block_mask=bm),
    }
    timed_pair(timer, "window", f"window (4096, 0), causal, N=64K, H={H}, d={d}", impls, q, k, v, do,
               block_flops(layout, d), block_flops(layout, d, backward=True), dev)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = {}
    for r in rows:
        if r["impl"] in ("sparseflash", "flex") and r["pass"] in ("fwd", "fwd+bwd"):
            pairs.setdefault((r["suite"], r["case"], r["pass"]), {})[r["impl"]] = r["ms"]
    labels, ratios = [], []
    for (suite, case, p), m in pairs.items():
        if "sparseflash" in m and "flex" in m:
            labels.append(f"{suite}: {case.split(',')[0]} {p}")
            ratios.append(m["flex"] / m["sparseflash"])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.5))
    ax.barh(labels, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
    ax.axvline(1.0, color="k", lw=1)
    ax.set_xlabel("FlexAttention time / sparseflash time (higher is better for sparseflash)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def start_run(args, argv, script: str):
    """(device, output folder, run metadata, timer) of a bf16 CUDA run of ``script``."""
    args.argv = sys.argv[1:] if argv is None else argv
    args.dtype, args.tiny, args.quick, args.estimate_device = "bfloat16", False, False, None
    dev = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = environment(args, dev)
    meta["command"] = f"PYTHONPATH=. python benchmarks/{script} " + " ".join(args.argv)
    return dev, out, meta, Timer(dev, warmup_ms=100, rep_ms=400, min_reps=10)


def write_rows(out: Path, stem: str, meta: dict) -> None:
    """``stem.json`` (metadata and rows) and ``stem.csv`` (the rows) in ``out``."""
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": ROWS}, indent=1))
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        w.writeheader()
        w.writerows(ROWS)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--suites", default="docs,decode,window")
    args = ap.parse_args(argv)
    dev, out, meta, timer = start_run(args, argv, "real_batches.py")
    for suite in args.suites.split(","):
        try:
            {"docs": bench_docs, "decode": bench_decode, "window": bench_window}[suite](timer, dev, torch.bfloat16)
        except Exception as exc:  # record and go on: one failing peer must not lose the rest
            add(suite, "-", "error", "-", float("nan"), None, None, f"{type(exc).__name__}: {str(exc)[:300]}")
    write_rows(out, "real_batches", meta)
    try:
        plot(ROWS, out / "real_batches.png")
    except Exception as exc:
        print("plot failed:", exc)


if __name__ == "__main__" and "--report" not in sys.argv:
    main()


def report(result_dirs, out_md):
    """docs/benchmarks-real-batches.md from one or more result folders' real_batches.json."""
    lines = ["# Real batches on an H200: packed documents, decode, sliding window", "",
             "Generated by `python benchmarks/real_batches.py --report DIR... --md FILE` from the",
             "committed results; each table is one run, every row of it measured in that run.", ""]
    for d in result_dirs:
        data = json.loads((Path(d) / "real_batches.json").read_text())
        meta = data["meta"]
        lines += [f"## `{d}`", "",
                  f"Command: `{meta['command']}` on {meta.get('gpu')} (torch {meta['torch']}, triton "
                  f"{meta.get('triton')}, CUDA {meta.get('cuda')}), commit {meta.get('git_commit')}, "
                  f"{meta['date_utc']}.", "",
                  "| suite | case | impl | pass | ms (host µs for 'host us/step') | TFLOP/s | peak GiB | note |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in data["rows"]:
            lines.append(f"| {r['suite']} | {r['case']} | {r['impl']} | {r['pass']} | {r['ms']} | "
                         f"{r['tflops'] if r['tflops'] is not None else '–'} | "
                         f"{r['peak_gib'] if r['peak_gib'] is not None else '–'} | {r['note']} |")
        ratios = {}
        for r in data["rows"]:
            if r["impl"] in ("sparseflash", "flex"):
                ratios.setdefault((r["suite"], r["case"], r["pass"]), {})[r["impl"]] = r["ms"]
        lines += ["", "Flex time ÷ our time (host µs for the host rows), same run:", ""]
        for (suite, case, p), m in ratios.items():
            if len(m) == 2:
                lines.append(f"- {suite}, {case}, {p}: **{m['flex'] / m['sparseflash']:.2f}×**")
        lines.append("")
    Path(out_md).write_text("\n".join(lines) + "\n")


if __name__ == "__main__" and "--report" in sys.argv:
    args = sys.argv[sys.argv.index("--report") + 1:]
    md = args[args.index("--md") + 1]
    report([a for a in args[:args.index("--md")]], md)
