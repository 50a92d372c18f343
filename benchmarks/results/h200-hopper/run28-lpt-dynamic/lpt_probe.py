"""run28 probe: causal tiles handed out longest first at run time (stop 43).

Run27 found that a dense causal 4K forward tile costs ours 6.6 us of fixed time per SM against
FA4's 3.2, most of it from uneven tiles (the SMs idle 8% of the run). Two partial gains were
measured there: the longest-first launch order by L2 section (``launch.LAUNCH_LPT``, +2.8% on
4K d=128) and the persistent forward with run-time tiles (``HOPPER_PERSISTENT`` +
``HOPPER_DYNAMIC_TILES``, +0.7%). This times the two together, forward only, on dense causal
4K/8K/16K at d=128 and d=64 (H = 2048 / d, B = 16384 / N: the same 128-query tiles), beside
FA4 and cuDNN in the same process, interleaved (benchmarks/timing.py). Every variant's output
is compared with the default's (the same tile computations in another order: bit for bit).

    git apply benchmarks/results/h200-hopper/run28-lpt-dynamic/lpt-switch-off-by-default.patch
    PYTHONPATH=. python benchmarks/results/h200-hopper/run28-lpt-dynamic/lpt_probe.py --out DIR

The order was not kept: the patch (run27's ``LAUNCH_LPT``, off unless set) is what call 1 ran.
"""
import argparse
import json
from pathlib import Path

import torch

import sparseflash as sf
from benchmarks import timing
from benchmarks.hopper import cudnn_fn, fa4_fn, fa4_function, ours_fn
from benchmarks.run import Timer

PD = dict(HOPPER_PERSISTENT=True, HOPPER_DYNAMIC_TILES=True)
VARIANTS = {
    "ours": None,
    "lpt": dict(LAUNCH_LPT=True),
    "pd": PD,
    "pd-lpt": dict(PD, LAUNCH_LPT=True),
    "pd-lpt-16M": dict(PD, LAUNCH_LPT=True, _LPT_L2_BYTES=16 * 2 ** 20),
    "pd-lpt-global": dict(PD, LAUNCH_LPT=True, _LPT_L2_BYTES=2 ** 40),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--heat", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dims", default="128,64")
    ap.add_argument("--lengths", default="4096,8192,16384")
    args = ap.parse_args()
    from sparseflash.kernels import launch
    if not hasattr(launch, "LAUNCH_LPT"):
        ap.error("launch.LAUNCH_LPT is missing: apply lpt-switch-off-by-default.patch first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    timer = Timer(dev, warmup_ms=100, rep_ms=400, min_reps=10)
    fa4 = fa4_function()
    rows = []
    for d in (int(x) for x in args.dims.split(",")):
        H = 2048 // d
        for N in (int(x) for x in args.lengths.split(",")):
            B = 16384 // N
            case = f"dense causal N={N} d={d}"
            layout = sf.compile(sf.dense(), N, block_size=128, causal=True, num_heads=H)
            impls = {name: ours_fn(layout, False, settings=s) for name, s in VARIANTS.items()}
            impls["cudnn"] = cudnn_fn(True)
            if fa4 is not None:
                impls["fa4"] = fa4_fn(fa4, None, B, True)
            g = torch.Generator(device=dev).manual_seed(0)
            q, k, v = (torch.randn(B, N, H, d, device=dev, dtype=torch.bfloat16, generator=g).transpose(1, 2)
                       for _ in range(3))
            ref = impls["ours"](q, k, v)
            diffs = {}
            for name, fn in impls.items():
                with getattr(fn, "switches", __import__("contextlib").nullcontext)():
                    o = fn(q, k, v)
                diffs[name] = float((o.float() - ref.float()).abs().max())
            jobs = [(name, (lambda fn=fn: fn(q, k, v),), getattr(fn, "switches", __import__("contextlib").nullcontext))
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
            (out / "rows.json").write_text(json.dumps(rows, indent=1))
    base = {r["case"]: r["ms"] for r in rows if r["impl"] == "ours"}
    lines = [f"{'case':26s} {'impl':14s} {'ms':>8s} {'TF/s':>6s} {'ours/x':>7s} {'fa4/x':>7s} diff"]
    fa4_ms = {r["case"]: r["ms"] for r in rows if r["impl"] == "fa4"}
    for r in rows:
        f = fa4_ms.get(r["case"])
        lines.append(f"{r['case']:26s} {r['impl']:14s} {r['ms']:8.4f} {r['tflops']:6.1f} "
                     f"{base[r['case']] / r['ms']:7.3f} {(f / r['ms']) if f else float('nan'):7.3f} "
                     f"{r['max_abs_diff_vs_ours']:.1e}")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
