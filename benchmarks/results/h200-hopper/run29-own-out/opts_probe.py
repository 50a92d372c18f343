"""run29 probe: the output copies (run28) with issue 11's options (stop 44).

Call 3's parity suite measured softcap's and ALiBi's overheads on local(8)|global_blocks(1)
causal 16K above run24's (forward+backward 1.174 and 1.148 against 1.130 and 1.074): there the
dK/dV kernel's output copy is on by the table rule (short columns, launch._bwd_out_tma), and
its d=128 step loops spill more with the options. This times every option (none, softcap 30,
ALiBi (H,), dropout 0.1) forward and forward+backward with the default stores, the dK/dV
register stores (HOPPER_BWD_OUT_TMA=False) and the forward's register stores
(HOPPER_FWD_OUT_TMA=False), interleaved in one process (benchmarks/timing.py), on that table
and on dense causal 16K (where the dK/dV copy is off by the rule: only the forward's variant).

    PYTHONPATH=. python benchmarks/results/h200-hopper/run29-own-out/opts_probe.py --out DIR
    (call 6: --layouts dense --variants default,bwd-copy --options none,dropout,softcap)
"""
import argparse
import functools
import json
from pathlib import Path

import torch

import sparseflash as sf
from benchmarks import real_batches as rb, timing
from benchmarks.parity import alibi_slopes
from benchmarks.run import Timer

VARIANTS = {"default": {}, "bwd-reg": dict(HOPPER_BWD_OUT_TMA=False),
            "fwd-reg": dict(HOPPER_FWD_OUT_TMA=False), "bwd-copy": dict(HOPPER_BWD_OUT_TMA=True)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--heat", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="default,bwd-reg,fwd-reg",
                    help="of " + ",".join(VARIANTS) + " (bwd-reg is left out on the dense layout, "
                         "bwd-copy on the local one: there they are the default)")
    ap.add_argument("--layouts", default="local,dense")
    ap.add_argument("--options", default="none,softcap,alibi,dropout")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    timer = Timer(dev, warmup_ms=100, rep_ms=300, min_reps=10)
    N, H, d = 16384, 16, 128
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v, do = (torch.randn(1, H, N, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(4))
    slopes = alibi_slopes(H).to(dev)
    options = {"none": {}, "softcap": dict(softcap=30.0), "alibi": dict(alibi_slopes=slopes),
               "dropout": dict(dropout_p=0.1)}
    options = {n: options[n] for n in args.options.split(",")}
    wanted = args.variants.split(",")
    rows = []
    layouts = {"local": ("local(8)|global_blocks(1)", sf.local(8) | sf.global_blocks(1)),
               "dense": ("dense", sf.dense())}
    for pname, pattern in (layouts[n] for n in args.layouts.split(",")):
        case = f"{pname} causal N=16K d=128"
        same = "bwd-reg" if pname == "dense" else "bwd-copy"
        variants = {k_: v_ for k_, v_ in VARIANTS.items() if k_ in wanted and k_ != same}
        jobs, ref = [], {}
        for oname, opt in options.items():
            fn = functools.partial(lambda q, k, v, opt=opt: sf.sparse_attention(q, k, v, pattern, causal=True, **opt))
            for vname, sw in variants.items():
                hold = functools.partial(rb.launch_switches, **sw)
                name = f"{oname}/{vname}"
                torch.manual_seed(0)
                with hold():
                    o = fn(q, k, v)
                if vname == "default":
                    ref[oname] = o
                diff = float((o.float() - ref[oname].float()).abs().max())
                rows.append(dict(case=case, impl=name, check="max|out - default's|", value=diff))
                jobs.append((name, timing.passes(fn, q, k, v, do, hold), hold))
        res = timing.interleaved(timer, dev, jobs, rounds=args.rounds, heat_s=args.heat)
        for name, _, _ in jobs:
            times = res[name][0]
            rows.append(dict(case=case, impl=name, fwd_ms=round(timing.mean(times[0]), 4),
                             fwd_bwd_ms=round(timing.mean(times[1]), 4),
                             rounds=[[round(t, 4) for t in ts] for ts in times]))
            print(json.dumps(rows[-1]), flush=True)
        (out / "rows.json").write_text(json.dumps(rows, indent=1))
    lines = [f"{'case':36s} {'impl':18s} {'fwd ms':>8s} {'f+b ms':>8s} {'fwd/none':>8s} {'f+b/none':>8s}"]
    base = {(r["case"], r["impl"].split("/")[1]): r for r in rows if "fwd_ms" in r and r["impl"].startswith("none/")}
    for r in rows:
        if "fwd_ms" not in r:
            continue
        b = base[(r["case"], r["impl"].split("/")[1])]
        lines.append(f"{r['case']:36s} {r['impl']:18s} {r['fwd_ms']:8.4f} {r['fwd_bwd_ms']:8.4f} "
                     f"{r['fwd_ms'] / b['fwd_ms']:8.3f} {r['fwd_bwd_ms'] / b['fwd_bwd_ms']:8.3f}")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
