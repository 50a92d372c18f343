"""The Hopper forward (kernels/hopper.py) against FlashAttention-4, cuDNN and our portable
kernel, on the same block tables, in one run (issue 10).

Cases: dense at 4K and 16K, causal and not, d=64 (H=32) and d=128 (H=16), B*N = 16K; and the
block-sparse layouts of docs/anchors (local, butterfly, bigbird, strided at 16K-64K), B=1.
Impls, each forward and forward+backward:

* ``ours``: ``sparse_attention`` with the default dispatch (the Hopper forward and dK/dV
  kernels where they apply, the latter computing dQ too: ``launch.HOPPER_FUSED_DQ``);
* ``portable``: the same call with the Hopper kernels switched off (``launch.USE_HOPPER`` and
  ``USE_HOPPER_BWD`` False);
* ``fa4``: ``flash_attn.cute.flash_attn_func`` on the same tables
  (:func:`sparseflash.to_fa4_block_sparse`), skipped with a one-line note when FA4 is missing;
* ``cudnn``: SDPA's cuDNN backend, dense cases only;
* ``flex`` (``--flex``): FlexAttention's compiled Triton kernel on a BlockMask of the same
  blocks.

Every impl's output and gradients are checked against ``ours`` (max |diff| / max |ours|) before
timing. The impls of a case are timed interleaved after a heat phase (``--heat`` seconds of all
of them in turn, then ``--rounds`` rounds, every other one reversed, each time the mean:
benchmarks/timing.py); until run23 ``ours`` was timed first, right after the case's compiles,
on a GPU that had idled and ran faster, which favoured it by up to a few percent.
FLOPs count computed blocks only. Writes ``hopper.json``/``hopper.csv`` (again after each case,
so that a run stopped by a time limit keeps the cases it finished) and ``fa4_ratio.json`` (FA4
time / our time per case, the issue's summary format) to ``--out``.
Usage: ``PYTHONPATH=. python benchmarks/hopper.py --out DIR [--quick]``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
from benchmarks.real_batches import (ROWS, add, launch_switches, parse_launch_settings, peak,  # noqa: E402
                                     rel_err, start_run, write_rows)
from benchmarks import timing  # noqa: E402
from sparseflash.kernels import launch  # noqa: E402

DENSE = [(n, d, causal) for d in (128, 64) for n in (4096, 16384) for causal in (False, True)]
SPARSE = [  # (name, pattern, N, d)
    ("local(8)", sf.local(8), 16384, 128),
    ("local(2)", sf.local(2), 16384, 128),
    ("butterfly", sf.butterfly(), 16384, 128),
    ("bigbird(3,2,3)", sf.bigbird(3, 2, 3), 16384, 128),
    ("strided(16)|local(1)", sf.strided(16) | sf.local(1), 16384, 128),
    ("local(32)", sf.local(32), 65536, 128),
    ("local(2)", sf.local(2), 65536, 128),
    ("local(8)", sf.local(8), 16384, 64),
    ("bigbird(3,2,3)", sf.bigbird(3, 2, 3), 16384, 64),
    # the densities reach 45% (run23): 34-43% at 16K
    ("bigbird(16,8,16)", sf.bigbird(16, 8, 16), 16384, 128),
    ("strided(4)|local(8)", sf.strided(4) | sf.local(8), 16384, 128),
    ("local(28)", sf.local(28), 16384, 64),
]
QUICK_DENSE = [(16384, 128, False), (16384, 128, True), (4096, 64, False)]
QUICK_SPARSE = [SPARSE[0], SPARSE[3]]
ROUNDS = timing.ROUNDS      # --rounds
HEAT_S = timing.HEAT_S      # --heat


def fa4_function():
    try:
        from flash_attn.cute import flash_attn_func
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed here"
        print(f"FA4 skipped: flash_attn.cute does not import ({type(exc).__name__}: {exc})")
        return None
    return flash_attn_func


def ours_fn(layout, portable, stages=None, portable_bwd=False, hopper_bwd=False, persistent=False,
            settings=None):
    """sparse_attention on the layout; ``portable`` switches the Hopper forward off,
    ``stages`` overrides its K/V ring depth, ``persistent`` makes it the persistent kernel
    (``launch.HOPPER_PERSISTENT``), ``settings`` sets other launch module values (a dict),
    ``portable_bwd`` / ``hopper_bwd`` force the portable / the Hopper dK/dV kernel (variants;
    the plan cache keys on them).

    The backward reads the switches when autograd runs it, after ``fn`` has returned:
    ``fn.switches()`` is a context manager that sets them, and ``run_case`` holds it around
    the backward as well. (Before this, ``--pbwd`` timed the default backward for both impls:
    the A/B of benchmarks/results/h200-hopper/run3-bwd-ab compared a backward with itself.)"""
    def switches():
        values = {}
        if portable:
            values["USE_HOPPER"] = False
        if portable or portable_bwd:
            values["USE_HOPPER_BWD"] = False
        elif hopper_bwd:
            values["USE_HOPPER_BWD"] = True
        if stages is not None:
            # the forward's ring depth in either pipeline (launch.HOPPER_FWD_PIPELINE)
            values["HOPPER_FWD_STAGES"] = stages
        if persistent:
            values["HOPPER_PERSISTENT"] = persistent
        values.update(settings or {})
        return launch_switches(**values)

    def fn(q, k, v):
        with switches():
            return sf.sparse_attention(q, k, v, layout)
    fn.switches = switches
    return fn


def variants(layout, d, wanted, pbwd=False, hbwd=False, persistent=False, settings=()):
    """Extra impls: ``ours-s<stages>`` (``--stages d:n,...``), ``ours-persist`` (the persistent
    forward, ``--persistent``), ``ours-NAME=VALUE`` (a launch module value, ``--set``),
    ``ours-pbwd`` (Hopper
    forward, portable dK/dV) with ``--pbwd``, ``ours-hbwd`` (Hopper forward and dK/dV) with
    ``--hbwd``."""
    extra = {f"ours-s{n}": ours_fn(layout, False, n) for dd, n in wanted if dd == d}
    if persistent:
        extra["ours-persist"] = ours_fn(layout, False, persistent=True)
    for item, values in settings:
        extra[f"ours-{item}"] = ours_fn(layout, False, settings=values)
    if pbwd:
        extra["ours-pbwd"] = ours_fn(layout, False, portable_bwd=True)
    if hbwd:
        extra["ours-hbwd"] = ours_fn(layout, False, hopper_bwd=True)
    return extra


def fa4_fn(flash_attn_func, layout, B, dense_causal):
    if layout is None:
        def fn(q, k, v):
            out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=dense_causal)
            return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
        return fn
    from sparseflash.integrations.fa4 import fa4_mask_args
    fwd, bwd = sf.to_fa4_block_sparse(layout, batch=B, device="cuda")
    extra = fa4_mask_args(layout)

    def fn(q, k, v):
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                              block_sparse_tensors=fwd, block_sparse_tensors_bwd=bwd, **extra)
        return (out[0] if isinstance(out, tuple) else out).transpose(1, 2)
    return fn


def flex_fn(layout, dev):
    """FlexAttention's compiled Triton kernel on a BlockMask holding exactly the layout's blocks
    (benchmarks/run.py ``flex_block_mask``; the dynamo cache limits raised so that many shapes
    keep the fused kernel)."""
    from benchmarks.real_batches import flex_fn as compiled_flex
    from benchmarks.run import flex_block_mask

    flex = compiled_flex()
    block_mask = flex_block_mask(layout, dev)

    def fn(q, k, v):
        return flex(q, k, v, block_mask=block_mask)
    return fn


def cudnn_fn(causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def fn(q, k, v):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return fn


def _held(fn):
    """The context manager that holds an impl's settings (``fn.switches``, see :func:`ours_fn`)."""
    return getattr(fn, "switches", contextlib.nullcontext)()


def run_case(timer, dev, case, impls, B, H, N, d, flops):
    """Checks every impl of ``impls`` ({name: fn(q, k, v)}) against ``ours``, forward and
    gradients, then times them interleaved (benchmarks/timing.py: ``--heat`` seconds of all of
    them in turn, then ``--rounds`` rounds, every other one reversed; each time the mean of its
    rounds). An impl whose forward raises is dropped with an ``error`` row; one whose backward
    raises keeps its forward timing and gets an ``error`` row for forward+backward."""
    g = torch.Generator(device=dev).manual_seed(0)
    # FA4 reads (B, N, H, d): make that the storage order and give every impl the same view
    q, k, v, do = (torch.randn(B, N, H, d, device=dev, dtype=torch.bfloat16, generator=g).transpose(1, 2)
                   for _ in range(4))
    outs = {}
    for name, fn in list(impls.items()):
        try:
            with _held(fn):
                outs[name] = fn(q, k, v)
        except Exception as exc:  # noqa: BLE001 - record and go on
            add("hopper", case, name, "error", float("nan"), None, None, f"{type(exc).__name__}: {str(exc)[:200]}")
            del impls[name]
    if "ours" not in outs:
        return
    notes = {name: ["" if name == "ours" else f"max|diff|/max|ours| = {rel_err(outs[name], outs['ours']):.2e}"]
             for name in impls}
    del outs
    calls, bwd_errors, ours_grads = {}, {}, None
    for name, fn in impls.items():
        fwd, step = timing.passes(fn, q, k, v, do, hold=lambda fn=fn: _held(fn))
        try:
            grads = step()
        except Exception as exc:  # noqa: BLE001 - keep its forward, record the backward's error
            calls[name] = (fwd,)
            bwd_errors[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        calls[name] = (fwd, step)
        if name == "ours":
            ours_grads = grads
        notes[name].append("" if name == "ours" or ours_grads is None else "grads max|diff|/max|ours| = " + ", ".join(
            f"{rel_err(a, b):.2e}" for a, b in zip(grads, ours_grads)))
        del grads
    del ours_grads
    res = timing.interleaved(timer, dev, [(name, calls[name], contextlib.nullcontext) for name in impls],
                             rounds=ROUNDS, heat_s=HEAT_S, peak=peak)
    for i, (p, f) in enumerate((("fwd", flops), ("fwd+bwd", 3.5 * flops))):
        for name in impls:
            times, peaks = res[name]
            if i < len(times):
                note = "; ".join(x for x in (notes[name][i], timing.rounds_note(times[i])) if x)
                add("hopper", case, name, p, timing.mean(times[i]), f, peaks[i], note)
            elif p == "fwd+bwd":
                add("hopper", case, name, p, float("nan"), None, None, bwd_errors[name])


def ratios(gpu: str) -> dict:
    """fa4_ratio.json: FA4 time / our time per case and pass, from this run's rows."""
    ms = {(r["case"], r["impl"], r["pass"]): r["ms"] for r in ROWS}
    cases = []
    for case in dict.fromkeys(r["case"] for r in ROWS):
        if (case, "fa4", "fwd") not in ms or (case, "ours", "fwd") not in ms:
            continue
        entry = {"case": case}
        for p, key in (("fwd", "fwd_ratio"), ("fwd+bwd", "fwd_bwd_ratio")):
            a, b = ms.get((case, "fa4", p)), ms.get((case, "ours", p))
            entry[key] = round(a / b, 3) if a and b and a == a and b == b else None
        cases.append(entry)
    vals = lambda key: [c[key] for c in cases if c[key] is not None]  # noqa: E731
    return {"gpu": gpu, "min_fwd_ratio": min(vals("fwd_ratio"), default=None),
            "min_fwd_bwd_ratio": min(vals("fwd_bwd_ratio"), default=None), "cases": cases}


def plot(rows, path: Path, title: str = "Hopper kernels vs FA4 / cuDNN / portable, bf16, same tables, one run") -> None:
    """TFLOP/s per case and impl, forward and forward+backward, one panel each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows if r["pass"] == "fwd"))
    impls = list(dict.fromkeys(r["impl"] for r in rows if r["pass"] == "fwd"))
    fig, axes = plt.subplots(2, 1, figsize=(max(10, 0.9 * len(cases)), 9), sharex=True)
    width = 0.8 / max(1, len(impls))
    for ax, p in zip(axes, ("fwd", "fwd+bwd")):
        tf = {(r["case"], r["impl"]): r["tflops"] for r in rows if r["pass"] == p}
        for i, impl in enumerate(impls):
            ys = [tf.get((c, impl)) or 0 for c in cases]
            ax.bar([x + i * width for x in range(len(cases))], ys, width, label=impl)
        ax.set_ylabel(f"{p} TFLOP/s (computed blocks)")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=len(impls))
    axes[1].set_xticks([x + 0.4 - width / 2 for x in range(len(cases))])
    axes[1].set_xticklabels([c.replace(" density=", "\n") for c in cases], rotation=60, ha="right", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    global ROUNDS, HEAT_S
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--report", action="store_true", help="only redraw hopper.png from --out/hopper.json")
    ap.add_argument("--quick", action="store_true", help="a few cases, for a first look")
    ap.add_argument("--stages", default="", help="extra ring depths to time, e.g. 128:3,64:3")
    ap.add_argument("--persistent", action="store_true", help="also time the persistent Hopper forward")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE[;NAME=VALUE]",
                    help="also time ours with a sparseflash.kernels.launch value set, e.g. "
                         "HOPPER_FWD_OVERLAP=False (a Python literal; several for one impl joined by ';'; "
                         "repeatable)")
    ap.add_argument("--flex", action="store_true",
                    help="also time FlexAttention's compiled Triton kernel on the same blocks")
    ap.add_argument("--pbwd", action="store_true", help="also time the portable dK/dV kernel")
    ap.add_argument("--hbwd", action="store_true", help="also time the Hopper dK/dV kernel forced on")
    ap.add_argument("--no-peers", action="store_true", help="skip FA4, cuDNN and the portable kernels")
    ap.add_argument("--only", choices=("dense", "sparse"), help="run only the dense or the sparse cases")
    ap.add_argument("--skip", default="", help="impls not to run, e.g. portable,cudnn")
    ap.add_argument("--cases", default="",
                    help="';'-separated prefixes of the case names to run, e.g. 'dense causal;bigbird(16' "
                         "(case names as in hopper.csv: 'dense N=4096 d=128', 'local(8) N=16384 d=64 ...')")
    ap.add_argument("--rounds", type=int, default=ROUNDS,
                    help="interleaved timing rounds per case, every other one reversed (benchmarks/timing.py)")
    ap.add_argument("--heat", type=float, default=HEAT_S,
                    help="seconds of every impl of a case in turn before its rounds (benchmarks/timing.py)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    ROUNDS, HEAT_S = args.rounds, max(args.heat, 0.0)
    args.suites = "hopper"
    if args.report:
        plot(json.loads((Path(args.out) / "hopper.json").read_text())["rows"], Path(args.out) / "hopper.png")
        return
    quick = args.quick
    wanted = [tuple(int(x) for x in item.split(":")) for item in args.stages.split(",") if item]
    settings = []
    for item in args.set:
        try:
            settings.append((item, parse_launch_settings(item)))
        except ValueError as exc:
            ap.error(str(exc))
    extra = dict(pbwd=args.pbwd, hbwd=args.hbwd, persistent=args.persistent, settings=settings)
    skip = set(args.skip.split(","))
    prefixes = [c for c in args.cases.split(";") if c]

    def wanted_case(case):
        return not prefixes or any(case.startswith(c) for c in prefixes)
    dev, out, meta, timer = start_run(args, argv, "hopper.py")
    fa4 = None if args.no_peers else fa4_function()
    meta["fa4"] = "missing" if fa4 is None else "flash_attn.cute"
    for N, d, causal in ([] if args.only == "sparse" else QUICK_DENSE if quick else DENSE):
        H, B = 2048 // d, max(1, 16384 // N)
        layout = sf.compile(sf.dense(), N, block_size=128, causal=causal, num_heads=H)
        impls = {"ours": ours_fn(layout, False), **variants(layout, d, wanted, **extra)}
        if not args.no_peers:
            impls.update(portable=ours_fn(layout, True), cudnn=cudnn_fn(causal))
        impls = {n: f for n, f in impls.items() if n not in skip}
        if args.flex:
            impls["flex"] = flex_fn(layout, dev)
        if fa4 is not None:
            impls["fa4"] = fa4_fn(fa4, None, B, causal)
        flops = 4.0 * d * 128 ** 2 * layout.nnz * B      # nnz counts every head
        case = f"dense{' causal' if causal else ''} N={N} d={d}"
        if wanted_case(case):
            run_case(timer, dev, case, impls, B, H, N, d, flops)
            if ROWS:                            # so far: a time limit keeps the cases done
                write_rows(out, "hopper", meta)
    for name, pattern, N, d in ([] if args.only == "dense" else QUICK_SPARSE if quick else SPARSE):
        H = 2048 // d
        layout = sf.compile(pattern, N, block_size=128, num_heads=H)
        impls = {"ours": ours_fn(layout, False), **variants(layout, d, wanted, **extra)}
        if not args.no_peers:
            impls["portable"] = ours_fn(layout, True)
        impls = {n: f for n, f in impls.items() if n not in skip}
        if args.flex:
            impls["flex"] = flex_fn(layout, dev)
        if fa4 is not None:
            impls["fa4"] = fa4_fn(fa4, layout, 1, False)
        flops = 4.0 * d * 128 ** 2 * layout.nnz
        case = f"{name} N={N} d={d} density={layout.density:.3f}"
        if wanted_case(case):
            run_case(timer, dev, case, impls, 1, H, N, d, flops)
            if ROWS:
                write_rows(out, "hopper", meta)
    write_rows(out, "hopper", meta)
    summary = ratios(meta.get("gpu", torch.cuda.get_device_name(dev)))
    (out / "fa4_ratio.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    try:
        plot(ROWS, out / "hopper.png")
    except Exception as exc:  # noqa: BLE001 - matplotlib is optional
        print("plot skipped:", exc)


if __name__ == "__main__":
    main()
