"""run30 probe: the forward's K and V slots released separately (stop 45), forward only.

The Hopper forward's consumers gave a K/V ring slot back once the step's ``P V`` had completed,
so the producer copied the next K into it only then (run29: on a 2-stage ring at d=128 that
K arrived a step late, 12-29% slower). ``launch.HOPPER_FWD_KV_SPLIT=True`` gives K back once the
step's ``Q K^T`` has completed and V once ``P V`` has, on barriers of their own, as
FlashAttention-3's separate K and V pipelines do; ``launch.HOPPER_FWD_STAGES`` sets the ring
depth. Variants: ``split`` (the default depth), ``split2``/``split3`` (2 or 3 stages, split),
``s2``/``s3`` (2 or 3 stages, joint); with persistent CTAs and two Q buffers
(``launch.HOPPER_FWD_Q_BUFFERS``: the next tile's Q copied while this one runs), the names in
``VARIANTS``.

Forward only, dense cases at d=128 and d=64 (H = 2048 / d, B = 16384 / N) and
benchmarks/hopper.py's block-sparse cases, beside FA4 and cuDNN where installed, interleaved
(benchmarks/timing.py). Every variant's output is compared with the default's.

    PYTHONPATH=. python benchmarks/results/h200-hopper/run30-kv-split/kvsplit_probe.py --out DIR
"""
import argparse
import contextlib
import json
from pathlib import Path

import torch

import sparseflash as sf
from benchmarks import timing
from benchmarks.hopper import cudnn_fn, fa4_fn, fa4_function, ours_fn
from benchmarks.run import Timer

SPLIT2 = dict(HOPPER_FWD_KV_SPLIT=True, HOPPER_FWD_STAGES=2)
PERSIST = dict(HOPPER_PERSISTENT=True, HOPPER_DYNAMIC_TILES=False)
PD = dict(HOPPER_PERSISTENT=True, HOPPER_DYNAMIC_TILES=True)
Q2 = dict(HOPPER_FWD_Q_BUFFERS=2)
VARIANTS = {
    "ours": None,
    "split": dict(HOPPER_FWD_KV_SPLIT=True),
    "split2": SPLIT2,
    "split3": dict(HOPPER_FWD_KV_SPLIT=True, HOPPER_FWD_STAGES=3),
    "s2": dict(HOPPER_FWD_STAGES=2),
    "s3": dict(HOPPER_FWD_STAGES=3),
    # call 2 (d=128): persistent CTAs on the 2-stage split ring, with one or two Q buffers
    "split2-p": dict(SPLIT2, **PERSIST),
    "split2-pq": dict(SPLIT2, **PERSIST, **Q2),
    "split2-pdq": dict(SPLIT2, **PD, **Q2),
    # call 3 (d=64): two Q buffers on the default ring, with the output copy, split
    "q2": Q2,
    "q2-out": dict(Q2, HOPPER_FWD_OUT_TMA=True),
    "split-q2-out": dict(Q2, HOPPER_FWD_OUT_TMA=True, HOPPER_FWD_KV_SPLIT=True),
    "pdq": dict(PD, **Q2),
    "split-pdq": dict(PD, **Q2, HOPPER_FWD_KV_SPLIT=True),
}
SPARSE = [("local(2)", sf.local(2), 128), ("local(8)", sf.local(8), 128),
          ("bigbird(3,2,3)", sf.bigbird(3, 2, 3), 128), ("local(8)", sf.local(8), 64),
          ("bigbird(3,2,3)", sf.bigbird(3, 2, 3), 64)]


def cases(dims, dense, sparse, all_sparse=False):
    for d in dims:
        H = 2048 // d
        for item in dense:
            N, causal = int(item.rstrip("c")), item.endswith("c")
            B = 16384 // N
            yield (f"dense{' causal' if causal else ''} N={N} d={d}",
                   sf.compile(sf.dense(), N, block_size=128, causal=causal, num_heads=H), B, H, N, d, causal)
    if sparse:
        from benchmarks.hopper import SPARSE as ALL
        chosen = [(n, p, N, d) for n, p, N, d in ALL if d in dims] if all_sparse else \
            [(n, p, 16384, d) for n, p, d in SPARSE]
        for name, pattern, N, d in chosen:
            layout = sf.compile(pattern, N, block_size=128, num_heads=2048 // d)
            yield f"{name} N={N} d={d}", layout, 1, 2048 // d, N, d, False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--heat", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dims", default="128,64")
    ap.add_argument("--dense", default="4096c,4096,16384c",
                    help="dense cases: lengths, 'c' for causal")
    ap.add_argument("--no-sparse", action="store_true")
    ap.add_argument("--all-sparse", action="store_true", help="benchmarks/hopper.py's sparse cases")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    timer = Timer(dev, warmup_ms=100, rep_ms=400, min_reps=10)
    fa4 = fa4_function()
    rows = []
    names = args.variants.split(",")
    for case, layout, B, H, N, d, causal in cases([int(x) for x in args.dims.split(",")],
                                                  args.dense.split(","),
                                                  not args.no_sparse, args.all_sparse):
        # depths that do not apply: 2 at d=64, the default depth itself
        skip = ({"split2", "s2", "split2-p", "split2-pq", "split2-pdq"} if d == 64
                else {"split3", "s3", "q2", "q2-out", "split-q2-out", "pdq", "split-pdq"})
        impls = {name: ours_fn(layout, False, settings=VARIANTS[name]) for name in names
                 if name not in skip}
        if case.startswith("dense"):
            impls["cudnn"] = cudnn_fn(causal)
        if fa4 is not None:
            impls["fa4"] = fa4_fn(fa4, None, B, causal) if case.startswith("dense") else fa4_fn(fa4, layout, 1, False)
        g = torch.Generator(device=dev).manual_seed(0)
        q, k, v = (torch.randn(B, N, H, d, device=dev, dtype=torch.bfloat16, generator=g).transpose(1, 2)
                   for _ in range(3))
        ref = impls["ours"](q, k, v)
        diffs, errors = {}, {}
        for name, fn in list(impls.items()):
            try:
                with getattr(fn, "switches", contextlib.nullcontext)():
                    o = fn(q, k, v)
                diffs[name] = float((o.float() - ref.float()).abs().max())
            except Exception as exc:  # noqa: BLE001 - a variant that cannot run here is reported
                errors[name] = f"{type(exc).__name__}: {exc}"[:300]
                del impls[name]
        jobs = [(name, (lambda fn=fn: fn(q, k, v),), getattr(fn, "switches", contextlib.nullcontext))
                for name, fn in impls.items()]
        res = timing.interleaved(timer, dev, jobs, rounds=args.rounds, heat_s=args.heat)
        flops = 4.0 * d * 128 ** 2 * layout.nnz * B
        for name in impls:
            times = res[name][0][0]
            ms = timing.mean(times)
            row = dict(case=case, impl=name, pass_="fwd", ms=round(ms, 4),
                       tflops=round(flops / ms / 1e9, 1), max_abs_diff_vs_ours=diffs[name],
                       rounds=[round(t, 4) for t in times])
            rows.append(row)
            print(json.dumps(row), flush=True)
        for name, err in errors.items():
            rows.append(dict(case=case, impl=name, error=err))
            print(json.dumps(rows[-1]), flush=True)
        (out / "rows.json").write_text(json.dumps(rows, indent=1))
    base = {r["case"]: r["ms"] for r in rows if r["impl"] == "ours"}
    fa4_ms = {r["case"]: r["ms"] for r in rows if r["impl"] == "fa4"}
    lines = [f"{'case':30s} {'impl':8s} {'ms':>8s} {'TF/s':>6s} {'ours/x':>7s} {'fa4/x':>7s} diff"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:30s} {r['impl']:8s} error: {r['error'][:80]}")
            continue
        f = fa4_ms.get(r["case"])
        lines.append(f"{r['case']:30s} {r['impl']:8s} {r['ms']:8.4f} {r['tflops']:6.1f} "
                     f"{base[r['case']] / r['ms']:7.3f} {(f / r['ms']) if f else float('nan'):7.3f} "
                     f"{r['max_abs_diff_vs_ours']:.1e}")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
