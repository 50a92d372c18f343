"""Cost of the FlashAttention-parity options (issue 11), side by side in one run:

* ``dropout``: ``dropout_p=0.1`` against ``0`` at 16K tokens, d=128, H=16, bf16, forward and
  forward+backward, for dense causal and ``local(8) | global_blocks(1)`` causal; beside it the
  same overhead for FlashAttention-2 (``scaled_dot_product_attention`` with ``dropout_p`` on
  the FLASH_ATTENTION backend, dense causal).
* ``softcap``: ``softcap=30`` against off, same shapes.
* ``alibi``: ``alibi_slopes`` (flash-attn's geometric slopes, shape (H,)) against off.

Each row gives ms, TFLOP/s on computed blocks and peak memory; the ``overhead`` rows give the
time with the option divided by the time without it, from the same run, the two timed
interleaved (``--rounds``, 2 by default: every impl of a case timed once in order, then once in
reverse, each time the mean, after ``--heat`` seconds of all of them in turn; the GPU's clock
drifts over a run, ``time_jobs``); the ``kernel`` rows
say which kernels ran (Hopper or portable, forward and dK/dV, with the dispatcher's reason). Before timing, the
option's forward is checked: softcap/ALiBi against an SDPA run with the same bias (dense
causal), dropout for finiteness and the kept fraction. Dropout is also timed with the portable
dK/dV kernel and with the portable kernels throughout (``USE_HOPPER_BWD`` / ``USE_HOPPER``
held over the whole step), in the same run. Usage:
``PYTHONPATH=. python benchmarks/parity.py --out DIR``; writes ``parity.json`` and ``parity.csv``.

``--variants``: A/B of the selectable formulations in ONE process (``variants.json``/``.csv``):
none; dropout p=0.1 with each draw variant (16-bit interleaved = the original, 16-bit and
8-bit in the MMA mapping, 8-bit with 7 Philox rounds; ``sparseflash.philox.DROPOUT_*``);
softcap=30 plain/folded and ALiBi abs/column (``kernels.launch.SOFTCAP_VARIANT`` /
``ALIBI_VARIANT``); at 16K, d=128, H=16, B=1, bf16, dense causal and ``local(8) |
global_blocks(1)`` causal, fwd and fwd+bwd, beside FA2 (SDPA flash, dropout_p 0 and 0.1). The
variants' kernels are compiled first in parallel worker processes (Triton's on-disk cache),
so the run stays within a few minutes. Each variant is checked before timing: dropout Triton
against the torch backend on the same seed (same mask: small error), softcap/ALiBi against
the other formulation. ``--only softcap,alibi`` keeps the variants whose names start so (and
"none"). ``--smoke`` runs the same code on the CPU at 256 tokens (needs
``TRITON_INTERPRET=1``), for checking the script, not for timing.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import sparseflash as sf
from sparseflash.attention import sparse_attention

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import real_batches as rb, timing  # noqa: E402


def alibi_slopes(H: int) -> torch.Tensor:
    """The ALiBi paper's slopes 2^(-8 h / H), h = 1..H."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], dtype=torch.float32)


def kernels(q, layout, **opt) -> str:
    """Which kernels the dispatcher picks for this call (kernels.launch ``_use_hopper`` and
    ``_use_hopper_bwd``, which apply the USE_HOPPER / USE_HOPPER_BWD switches): forward, and
    the backward's dK/dV and where its dQ comes from (the Hopper dK/dV kernel itself with
    ``HOPPER_FUSED_DQ``, else the portable dQ kernel), with the reasons."""
    from sparseflash.kernels import launch

    kw = dict(scale=q.shape[-1] ** -0.5, config=None, softcap=opt.get("softcap", 0.0),
              alibi=opt.get("alibi_slopes"), dropout_p=opt.get("dropout_p", 0.0))
    fwd_why = launch._hopper_applies(q, q, q, layout, **kw)
    fwd = "Hopper" if launch._use_hopper(q, q, q, layout, **kw) else "portable"
    bwd_hopper = launch._use_hopper_bwd(q, q, q, q, layout, **kw)
    bwd_why = None
    if not bwd_hopper and launch.USE_HOPPER_BWD is False:
        bwd_why = "USE_HOPPER_BWD=False"
    elif not bwd_hopper and kw["softcap"] and fwd_why is None:
        bwd_why = "softcap: the Hopper dK/dV spills"
    why = "; ".join(r for r in (fwd_why, bwd_why) if r)
    fused = bwd_hopper and launch._use_fused_dq(split=False)
    bwd = "Hopper, dQ fused" if fused else ("Hopper, portable dQ" if bwd_hopper else "portable")
    if fwd == "Hopper" and kw["softcap"]:
        # the Hopper forward's softmax with the softcap: fixed shift or running max
        _, mods, _ = launch._mods(kw["softcap"], kw["alibi"], kw["dropout_p"], False, layout.causal,
                                  kw["scale"])
        fixed = launch._hopper_softcap(mods["HAS_SOFTCAP"], kw["softcap"], mods["HAS_ALIBI"], q.dtype,
                                       q.shape[-1]) >= 10
        fwd += " (softcap fixed shift)" if fixed else " (softcap running max)"
    return f"fwd {fwd}, dK/dV {bwd}" + (f" ({why})" if why else "")


ROUNDS = timing.ROUNDS      # --rounds
HEAT_S = timing.HEAT_S      # --heat


def time_jobs(timer, dev, case, jobs, q, k, v, do, flops_fwd, flops_bwd, suite="parity"):
    """Forward and forward+backward times of every job ``(name, fn, setup)`` (``setup()``: a
    context manager that holds the job's settings over its timed calls, backward included),
    interleaved after a heat phase (benchmarks/timing.py :func:`~benchmarks.timing.interleaved`:
    ``ROUNDS`` rounds over all jobs, every other one reversed, each job's time the mean of its
    rounds, after ``HEAT_S`` seconds of every job in turn). Adds each job's rows (its rounds in
    the note) and returns ``{name: (ms_fwd, ms_fwd_bwd)}``."""
    res = timing.interleaved(timer, dev, [(name, timing.passes(fn, q, k, v, do), setup) for name, fn, setup in jobs],
                             rounds=ROUNDS, heat_s=HEAT_S, peak=rb.peak)
    out = {}
    for name, _, _ in jobs:
        times, peaks = res[name]
        for i, (p, flops) in enumerate((("fwd", flops_fwd), ("fwd+bwd", flops_bwd))):
            rb.add(suite, case, name, p, timing.mean(times[i]), flops, peaks[i], timing.rounds_note(times[i]))
        out[name] = tuple(timing.mean(t) for t in times)
    return out


def overhead(case, name, base, with_opt, target, suite="parity"):
    for i, p in enumerate(("fwd", "fwd+bwd")):
        ratio = with_opt[i] / base[i]
        rb.add(suite, case, name, f"overhead {p}", ratio, None, None,
               "time with ÷ time without, same run; " + ("no target" if target is None else
               f"target <= {target:.2f}: {'met' if ratio <= target else 'NOT met'}"))


def fa2_dropout_overhead(timer, dev, case, q, k, v, do, bs, suite="parity"):
    """FlashAttention-2 (SDPA's flash backend), dense causal, with and without dropout 0.1:
    its own overhead, the yardstick beside ours."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, H, N, d = q.shape
    layout = sf.compile(sf.dense(), N, block_size=bs, causal=True, num_heads=H)
    ff, fb = rb.block_flops(layout, d), rb.block_flops(layout, d, backward=True)

    def fa2(p):
        def fn(q, k, v):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return fn
    ms = time_jobs(timer, dev, case, [("FA2 (SDPA flash)", fa2(0.0), contextlib.nullcontext),
                                      ("FA2 (SDPA flash) dropout_p=0.1", fa2(0.1), contextlib.nullcontext)],
                   q, k, v, do, ff, fb, suite=suite)
    overhead(case, "FA2 (SDPA flash) dropout_p=0.1", ms["FA2 (SDPA flash)"],
             ms["FA2 (SDPA flash) dropout_p=0.1"], float("inf"), suite=suite)


def bench(timer, dev, dtype, N=16384, H=16, d=128, bs=128):
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v, do = (torch.randn(1, H, N, d, device=dev, dtype=dtype, generator=g) for _ in range(4))
    slopes = alibi_slopes(H).to(dev)
    for pname, pattern in (("dense", sf.dense()), ("local(8)|global_blocks(1)", sf.local(8) | sf.global_blocks(1))):
        layout = sf.compile(pattern, N, block_size=bs, causal=True, num_heads=H)
        ff, fb = rb.block_flops(layout, d), rb.block_flops(layout, d, backward=True)
        case = f"{pname} causal, N={N // 1024}K, H={H}, d={d}"

        def ours(**opt):
            return lambda q, k, v: sparse_attention(q, k, v, pattern, causal=True, **opt)
        rb.add("parity", case, "sparseflash", "kernel", float("nan"), None, None, kernels(q, layout))
        # correctness before timing the options
        if pname == "dense":      # on 2K tokens: the SDPA reference materialises the bias
            n = min(2048, N)
            q2, k2, v2 = (t[:, :, :n] for t in (q, k, v))
            pos = torch.arange(n, device=dev)
            bias = -slopes[:, None, None] * (pos[:, None] - pos[None, :]).abs().float()
            causal = torch.ones(n, n, dtype=torch.bool, device=dev).tril()
            ref = F.scaled_dot_product_attention(q2.float(), k2.float(), v2.float(),
                                                 attn_mask=bias.masked_fill(~causal, -math.inf))
            err = rb.rel_err(sparse_attention(q2, k2, v2, pattern, causal=True, alibi_slopes=slopes), ref)
            rb.add("parity", case, "check: alibi vs fp32 SDPA with the bias (2K tokens)", "max|diff|/max|ref|",
                   err, None, None)
            capped = 30.0 * torch.tanh(q2.float() @ k2.float().transpose(-1, -2) * d ** -0.5 / 30.0)
            ref = torch.softmax(capped.masked_fill(~causal, -math.inf), -1) @ v2.float()
            err = rb.rel_err(sparse_attention(q2, k2, v2, pattern, causal=True, softcap=30.0), ref)
            rb.add("parity", case, "check: softcap vs fp32 eager (2K tokens)", "max|diff|/max|ref|", err, None, None)
            del bias, causal, ref, capped
        out = sparse_attention(q, k, v, pattern, causal=True, dropout_p=0.1)
        assert torch.isfinite(out).all(), "dropout output not finite"
        # the options, then dropout on other kernels (the portable dK/dV with the Hopper forward
        # kept, and the portable kernels throughout: the only path before the Hopper kernels
        # drew it), timed interleaved with the baseline
        options = (("dropout_p=0.1", dict(dropout_p=0.1), 1.15, {}),
                   ("softcap=30", dict(softcap=30.0), 1.10, {}),
                   ("alibi_slopes (H,)", dict(alibi_slopes=slopes), 1.10, {}),
                   ("dropout_p=0.1, portable dK/dV", dict(dropout_p=0.1), 1.15, dict(USE_HOPPER_BWD=False)),
                   ("dropout_p=0.1, portable kernels", dict(dropout_p=0.1), 1.15,
                    dict(USE_HOPPER=False, USE_HOPPER_BWD=False)))
        jobs = [("sparseflash", ours(), contextlib.nullcontext)]
        jobs += [(f"sparseflash {name}", ours(**opt), functools.partial(rb.launch_switches, **switches))
                 for name, opt, _, switches in options]
        ms = time_jobs(timer, dev, case, jobs, q, k, v, do, ff, fb)
        for name, opt, target, switches in options:
            with rb.launch_switches(**switches):
                rb.add("parity", case, f"sparseflash {name}", "kernel", float("nan"), None, None,
                       kernels(q, layout, **opt))
            overhead(case, f"sparseflash {name}", ms["sparseflash"], ms[f"sparseflash {name}"], target)
    fa2_dropout_overhead(timer, dev, f"dense causal, N={N // 1024}K, H={H}, d={d}", q, k, v, do, bs)


def plot(rows, path: Path) -> None:
    """The overhead rows (time with the option ÷ without, same run): one bar per option and
    layout, forward and forward+backward, with the targets as lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    over = [r for r in rows if str(r["pass"]).startswith("overhead")]
    cases = list(dict.fromkeys(r["case"] for r in over))
    impls = list(dict.fromkeys(r["impl"] for r in over))
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(impls) * len(cases) + 2.5), sharey=True)
    for ax, p in zip(axes, ("fwd", "fwd+bwd")):
        val = {(r["case"], r["impl"]): r["ms"] for r in over if r["pass"] == f"overhead {p}"}
        labels, ys = [], []
        for c in cases:
            for impl in impls:
                if (c, impl) in val:
                    labels.append(f"{impl} | {c.split(',')[0]}")
                    ys.append(val[(c, impl)])
        ax.barh(range(len(ys)), ys, color=["tab:orange" if "FA2" in lb else "tab:blue" for lb in labels])
        ax.set_yticks(range(len(ys)))
        ax.set_yticklabels(labels, fontsize=7)
        for target, style in ((1.10, ":"), (1.15, "--")):
            ax.axvline(target, color="k", linestyle=style, linewidth=0.8, label=f"target {target:.2f}")
        ax.axvline(1.0, color="grey", linewidth=0.8)
        ax.set_xlabel(f"{p}: time with ÷ time without (same run)")
        ax.invert_yaxis()
    axes[0].legend(fontsize=7)
    fig.suptitle("Cost of dropout, softcap and ALiBi (sparseflash; FA2's own dropout in orange)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


# ------------------------------------------------------------------ --variants
# name -> (option kwargs, {module attribute: value}); "none" is the baseline of every ratio
DROPOUT_VARIANTS = {
    "dropout 16-bit interleave (original)": dict(DROPOUT_BITS=16, DROPOUT_MAPPING="interleave", DROPOUT_ROUNDS=10),
    "dropout 16-bit mma": dict(DROPOUT_BITS=16, DROPOUT_MAPPING="mma", DROPOUT_ROUNDS=10),
    "dropout 8-bit mma": dict(DROPOUT_BITS=8, DROPOUT_MAPPING="mma", DROPOUT_ROUNDS=10),
    "dropout 8-bit mma, 7 rounds": dict(DROPOUT_BITS=8, DROPOUT_MAPPING="mma", DROPOUT_ROUNDS=7),
    "dropout 16-bit mma, 7 rounds": dict(DROPOUT_BITS=16, DROPOUT_MAPPING="mma", DROPOUT_ROUNDS=7),
    "dropout 16-bit quad": dict(DROPOUT_BITS=16, DROPOUT_MAPPING="quad", DROPOUT_ROUNDS=10),
    "dropout 16-bit quad, 7 rounds": dict(DROPOUT_BITS=16, DROPOUT_MAPPING="quad", DROPOUT_ROUNDS=7),
    "dropout 8-bit quad, 7 rounds": dict(DROPOUT_BITS=8, DROPOUT_MAPPING="quad", DROPOUT_ROUNDS=7),
    # how the Hopper kernels compute the same draws (kernels.launch.HOPPER_DROPOUT_FORM; the
    # variants above run the default form 3)
    "dropout 16-bit mma, Hopper form 0": dict(DROPOUT_MAPPING="mma", DROPOUT_ROUNDS=10, HOPPER_DROPOUT_FORM=0),
    "dropout 16-bit mma, Hopper form 1": dict(DROPOUT_MAPPING="mma", DROPOUT_ROUNDS=10, HOPPER_DROPOUT_FORM=1),
    "dropout 16-bit mma, Hopper form 2": dict(DROPOUT_MAPPING="mma", DROPOUT_ROUNDS=10, HOPPER_DROPOUT_FORM=2),
    "dropout 8-bit mma, Hopper form 0": dict(DROPOUT_BITS=8, DROPOUT_MAPPING="mma", DROPOUT_ROUNDS=10,
                                             HOPPER_DROPOUT_FORM=0),
    # stop 63: bit 5, dV's operand by cvt.rn.relu and dS^T's select in PTX
    "dropout 16-bit quad, 7 rounds, Hopper form 51": dict(DROPOUT_BITS=16, DROPOUT_MAPPING="quad",
                                                          DROPOUT_ROUNDS=7, HOPPER_DROPOUT_FORM=51),
    # the form before stop 61 (without bit 4: dS^T as |P^T| (where(P^T > 0, dP^T scale, 0) - delta))
    "dropout 16-bit quad, 7 rounds, Hopper form 3": dict(DROPOUT_BITS=16, DROPOUT_MAPPING="quad",
                                                         DROPOUT_ROUNDS=7, HOPPER_DROPOUT_FORM=3),
}
DEFAULTS = dict(DROPOUT_BITS=16, DROPOUT_MAPPING="auto", DROPOUT_ROUNDS=7, ALIBI_VARIANT="column",
                SOFTCAP_VARIANT="folded", HOPPER_DROPOUT_FORM=19, HOPPER_FWD_WALK=None,
                HOPPER_SOFTCAP_SHIFT=None, HOPPER_FWD_OVERLAP=None,
                _HOPPER_BWD_REGS=dict(plain=240, causal=240), USE_HOPPER=None, USE_HOPPER_BWD=None,
                SOFTCAP_SHIFT=None, HOPPER_BWD_ROWS_LATE=None, HOPPER_BWD_KV_REGS=None,
                HOPPER_RELEASE_ALL=None, HOPPER_BWD_SPLIT_LOOPS=None, _HOPPER_BWD_UNCLAMPED=False,
                HOPPER_BWD_OUT_TMA=None, HOPPER_BWD_OUT_RELOAD=True, HOPPER_BWD_ALIBI_FOLD=True,
                HOPPER_FWD_ALIBI_RAW=False, HOPPER_FWD_ALIBI_SIDES=True, HOPPER_BWD_CAP_EARLY=None)


def variant_list(H):
    """[(name, option kwargs builder, settings, target)]; kwargs built on the device later."""
    out = [("none", {}, {}, None)]
    for name, settings in DROPOUT_VARIANTS.items():
        out.append((name, dict(dropout_p=0.1), settings, 1.15))
    out.append(("softcap=30 plain", dict(softcap=30.0), dict(SOFTCAP_VARIANT="plain"), 1.10))
    out.append(("softcap=30 folded", dict(softcap=30.0), dict(SOFTCAP_VARIANT="folded"), 1.10))
    # the Hopper forward's softmax with the folded softcap: a fixed shift (the default where it
    # applies, launch.HOPPER_SOFTCAP_SHIFT) or the running row max; and Gemma-2's cap of 50
    out.append(("softcap=30 folded, running max", dict(softcap=30.0),
                dict(SOFTCAP_VARIANT="folded", HOPPER_SOFTCAP_SHIFT=False), 1.10))
    out.append(("softcap=50 folded", dict(softcap=50.0), dict(SOFTCAP_VARIANT="folded"), 1.10))
    # with the fixed shift, a quarter or a half of the forward's exponentials on the FMA pipe
    # (launch.HOPPER_SOFTCAP_EXP2_FMA, stop 52; off by default: no gain on an H200, run35)
    for share, what in ((4, "quarter"), (2, "half")):
        out.append((f"softcap=30 folded, exp2 {what} on FMA", dict(softcap=30.0),
                    dict(SOFTCAP_VARIANT="folded", HOPPER_SOFTCAP_EXP2_FMA=share), 1.10))
        out.append((f"softcap=50 folded, exp2 {what} on FMA", dict(softcap=50.0),
                    dict(SOFTCAP_VARIANT="folded", HOPPER_SOFTCAP_EXP2_FMA=share), 1.10))
    # the dK/dV kernel's softcap factor taken into P^T after dV's product is issued, the order
    # before stop 68 (launch.HOPPER_BWD_CAP_EARLY=False; the default takes it in before)
    for cap in (30.0, 50.0):
        out.append((f"softcap={cap:g} folded, dK/dV cap late", dict(softcap=cap),
                    dict(SOFTCAP_VARIANT="folded", HOPPER_BWD_CAP_EARLY=False), 1.10))
    # the fixed shift at d=64, where it is not the default (run23: slower on the dense forward)
    out.append(("softcap=30 folded, fixed shift", dict(softcap=30.0),
                dict(SOFTCAP_VARIANT="folded", HOPPER_SOFTCAP_SHIFT=True), 1.10))
    # the softmax in its own basic block (launch.HOPPER_FWD_OVERLAP; by default at d=128 only)
    out.append(("softcap=30 folded, overlap", dict(softcap=30.0),
                dict(SOFTCAP_VARIANT="folded", HOPPER_FWD_OVERLAP=True), 1.10))
    out.append(("none, overlap", {}, dict(HOPPER_FWD_OVERLAP=True), 1.10))
    # the portable kernels throughout (what GPUs other than Hopper run), softcap's forward with
    # the fixed shift (launch.SOFTCAP_SHIFT) or the running max
    portable = dict(USE_HOPPER=False, USE_HOPPER_BWD=False)
    out.append(("none, portable", {}, portable, None))
    out.append(("softcap=30 folded, portable", dict(softcap=30.0),
                dict(SOFTCAP_VARIANT="folded", **portable), 1.10))
    out.append(("softcap=30 folded, portable, running max", dict(softcap=30.0),
                dict(SOFTCAP_VARIANT="folded", SOFTCAP_SHIFT=False, **portable), 1.10))
    # the dK/dV consumers' registers on causal layouts (launch._HOPPER_BWD_REGS): 248, the most
    # beside the producer and writer warps' 24, against 240
    more = dict(_HOPPER_BWD_REGS=dict(plain=248, causal=248))
    out.append(("none, dK/dV 248 regs", {}, more, None))
    out.append(("softcap=30 folded, dK/dV 248 regs", dict(softcap=30.0),
                dict(SOFTCAP_VARIANT="folded", **more), 1.10))
    out.append(("dropout 16-bit quad, 7 rounds, dK/dV 248 regs", dict(dropout_p=0.1),
                dict(DROPOUT_VARIANTS["dropout 16-bit quad, 7 rounds"], **more), 1.15))
    def with_each_option(what, settings):
        # a kernel form without options, with dropout p=0.1 and with softcap 30
        out.append((f"none, {what}", {}, settings, None))
        out.append((f"dropout 16-bit quad, 7 rounds, {what}", dict(dropout_p=0.1),
                    dict(DROPOUT_VARIANTS["dropout 16-bit quad, 7 rounds"], **settings), 1.15))
        out.append((f"softcap=30 folded, {what}", dict(softcap=30.0),
                    dict(SOFTCAP_VARIANT="folded", **settings), 1.10))
    # ring slots released by every consumer thread (launch.HOPPER_RELEASE_ALL, stop 55)
    with_each_option("release all", dict(HOPPER_RELEASE_ALL=True))
    # what the dK/dV kernel's clamp of the exponent costs (launch._HOPPER_BWD_UNCLAMPED, stop 63:
    # an experiment, unsafe on a peaked softmax)
    out.append(("none, dK/dV unclamped", {}, dict(_HOPPER_BWD_UNCLAMPED=True), None))
    # the dK/dV consumers' full and masked steps as two loops (launch.HOPPER_BWD_SPLIT_LOOPS, stop
    # 58): the default with the softcap alone, so its A/B there is the one loop
    split = dict(HOPPER_BWD_SPLIT_LOOPS=True)
    out.append(("none, split loops", {}, split, None))
    out.append(("dropout 16-bit quad, 7 rounds, split loops", dict(dropout_p=0.1),
                dict(DROPOUT_VARIANTS["dropout 16-bit quad, 7 rounds"], **split), 1.15))
    out.append(("softcap=30 folded, one loop", dict(softcap=30.0),
                dict(SOFTCAP_VARIANT="folded", HOPPER_BWD_SPLIT_LOOPS=False), 1.10))
    # the dK/dV kernel's draws made before its wait for S^T (HOPPER_DROPOUT_FORM bit 2, stop 55)
    out.append(("dropout 16-bit quad, 7 rounds, dK/dV early draws", dict(dropout_p=0.1),
                dict(DROPOUT_VARIANTS["dropout 16-bit quad, 7 rounds"], HOPPER_DROPOUT_FORM=23), 1.15))
    # the dK/dV consumers reading a step's table entry before its first products are issued
    # (launch.HOPPER_BWD_ROWS_LATE=False, the order before run24)
    early = dict(HOPPER_BWD_ROWS_LATE=False)
    out.append(("none, rows early", {}, early, None))
    out.append(("softcap=30 folded, rows early", dict(softcap=30.0), dict(SOFTCAP_VARIANT="folded", **early), 1.10))
    out.append(("dropout 16-bit quad, 7 rounds, rows early", dict(dropout_p=0.1),
                dict(DROPOUT_VARIANTS["dropout 16-bit quad, 7 rounds"], **early), 1.15))
    out.append(("alibi column, rows early", dict(alibi_slopes=True), dict(ALIBI_VARIANT="column", **early), 1.10))
    # d=64: the dK/dV kernel's K and V in shared memory (launch.HOPPER_BWD_KV_REGS=False) where
    # they are A operands from registers by default, and in registers where they are not
    # (dropout: the step loops spill); d=128 keeps them in shared memory either way
    smem, regs = dict(HOPPER_BWD_KV_REGS=False), dict(HOPPER_BWD_KV_REGS=True)
    out.append(("none, K/V in shared memory", {}, smem, None))
    out.append(("softcap=30 folded, K/V in shared memory", dict(softcap=30.0),
                dict(SOFTCAP_VARIANT="folded", **smem), 1.10))
    out.append(("dropout 16-bit quad, 7 rounds, K/V in registers", dict(dropout_p=0.1),
                dict(DROPOUT_VARIANTS["dropout 16-bit quad, 7 rounds"], **regs), 1.15))
    out.append(("alibi column, K/V in shared memory", dict(alibi_slopes=True),
                dict(ALIBI_VARIANT="column", **smem), 1.10))
    # the causal ALiBi's row term in the stored lse2 (launch.HOPPER_BWD_ALIBI_FOLD; the default
    # since stop 65, and with it K/V in registers at d=64) turned off (run45-stop64 timed it as
    # "alibi column"), and the dK/dV kernel's output copy (launch.HOPPER_BWD_OUT_TMA) forced on,
    # with ALiBi (with the folded rows the table's rule, as without, since stop 66) and without
    out.append(("alibi column, unfolded rows", dict(alibi_slopes=True),
                dict(ALIBI_VARIANT="column", HOPPER_BWD_ALIBI_FOLD=False), 1.10))
    out.append(("alibi column, dK/dV output copy", dict(alibi_slopes=True),
                dict(ALIBI_VARIANT="column", HOPPER_BWD_OUT_TMA=True), 1.10))
    out.append(("none, dK/dV output copy", {}, dict(HOPPER_BWD_OUT_TMA=True), None))
    # the dK/dV kernel's output copy turned off (launch.HOPPER_BWD_OUT_TMA=False) where the table's
    # short columns take it by default (local(8)|global; the dense table's long columns do not):
    # held across the loops, its coordinates cost the softcap's d=128 full-step loop local
    # accesses (sm_90 SASS, stop 69), which HOPPER_BWD_OUT_RELOAD (the default) takes back
    with_each_option("no dK/dV output copy", dict(HOPPER_BWD_OUT_TMA=False))
    # the copy with the tile's coordinates held across the loops (launch.HOPPER_BWD_OUT_RELOAD=False,
    # the form before stop 69; run50-stop69 timed the reload, now the default, as "dK/dV output
    # copy reloaded" against this)
    with_each_option("dK/dV output copy held", dict(HOPPER_BWD_OUT_RELOAD=False))
    # the abs form (non-causal calls' form; --non-causal: "alibi column" is the abs form too, the
    # column form applying to causal layouts only): in the Hopper forward split by the diagonal's
    # sides (launch.HOPPER_FWD_ALIBI_SIDES, the default since stop 66; run47-stop66 called it
    # "alibi abs, sides" and the unsplit form "alibi abs"), unsplit, and in raw-score units
    # (launch.HOPPER_FWD_ALIBI_RAW, stop 65)
    out.append(("alibi abs", dict(alibi_slopes=True), dict(ALIBI_VARIANT="abs"), 1.10))
    out.append(("alibi abs, unsplit", dict(alibi_slopes=True),
                dict(ALIBI_VARIANT="abs", HOPPER_FWD_ALIBI_SIDES=False), 1.10))
    out.append(("alibi abs, raw units", dict(alibi_slopes=True),
                dict(ALIBI_VARIANT="abs", HOPPER_FWD_ALIBI_SIDES=False, HOPPER_FWD_ALIBI_RAW=True), 1.10))
    # the abs form walked in table order (its default at d=128 since stop 67: "diagonal-first")
    out.append(("alibi abs, walk table", dict(alibi_slopes=True),
                dict(ALIBI_VARIANT="abs", HOPPER_FWD_WALK="table"), 1.10))
    out.append(("alibi column", dict(alibi_slopes=True), dict(ALIBI_VARIANT="column"), 1.10))
    # the Hopper forward's walk (launch.HOPPER_FWD_WALK; the causal ALiBi's default is
    # "last-first"), and the same kernel with slopes of 0: the cost of its add per score alone
    for walk in ("table", "descending"):
        out.append((f"alibi column, walk {walk}", dict(alibi_slopes=True),
                    dict(ALIBI_VARIANT="column", HOPPER_FWD_WALK=walk), 1.10))
    out.append(("alibi column, zero slopes", dict(alibi_slopes="zero"), dict(ALIBI_VARIANT="column"), 1.10))
    for walk in ("descending", "last-first"):
        out.append((f"none, walk {walk}", {}, dict(HOPPER_FWD_WALK=walk), 1.10))
    return out


def apply_settings(settings):
    from sparseflash import philox
    from sparseflash.kernels import launch

    for key, value in {**DEFAULTS, **settings}.items():
        setattr(philox if key.startswith("DROPOUT") else launch, key, value)


@contextlib.contextmanager
def _settings_held(settings):
    """A variant's settings over its timed calls (``apply_settings``), the defaults after."""
    apply_settings(settings)
    try:
        yield
    finally:
        apply_settings({})


def patterns(smoke):
    if smoke:
        return (("dense", sf.dense()), ("local(1)|global_blocks(1)", sf.local(1) | sf.global_blocks(1)))
    return (("dense", sf.dense()), ("local(8)|global_blocks(1)", sf.local(8) | sf.global_blocks(1)))


def make_inputs(dev, dtype, N, H, d):
    g = torch.Generator(device=dev).manual_seed(0)
    return tuple(torch.randn(1, H, N, d, device=dev, dtype=dtype, generator=g) for _ in range(4))


def option_kwargs(opt, slopes):
    """The call's keyword arguments: ``alibi_slopes`` True stands for ``slopes``, "zero" for
    as many zeros."""
    out = dict(opt)
    if "alibi_slopes" in out:
        out["alibi_slopes"] = torch.zeros_like(slopes) if out["alibi_slopes"] == "zero" else slopes
    return out


def _warm_one(job):
    """Worker process: compile (by running once) one variant's kernels for every pattern."""
    settings, opt, N, H, d, bs, causal = job
    import torch  # noqa: F401  (fresh process)
    dev = torch.device("cuda")
    apply_settings(settings)
    q, k, v, do = make_inputs(dev, torch.bfloat16, N, H, d)
    slopes = alibi_slopes(H).to(dev)
    for _, pattern in patterns(False):
        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
        out = sparse_attention(qg, kg, vg, pattern, block_size=bs, causal=causal, **option_kwargs(opt, slopes))
        torch.autograd.grad(out, (qg, kg, vg), do)
    torch.cuda.synchronize()
    return True


def precompile(jobs, workers):
    """Compile every variant's kernels in parallel processes (they land in Triton's on-disk
    cache, which the timing process then reads)."""
    import concurrent.futures as cf
    import multiprocessing as mp
    import time

    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        results = list(ex.map(_warm_one, jobs))
    return time.perf_counter() - t0, all(results)


def _only(text):
    """--only's entries: split on ";" when there is one (names hold commas, e.g. "dropout 8-bit
    mma, 7 rounds$"), else on ","."""
    return [o.strip() for o in text.split(";" if ";" in text else ",") if o.strip()]


def bench_variants(timer, dev, dtype, N=16384, H=16, d=128, bs=128, smoke=False, workers=8, only=None,
                   causal=True):
    from sparseflash.philox import dropout_scale, dropout_threshold, dropout_variant

    # an --only entry is a prefix of the names to run, or a whole name followed by "$"
    variants = [v for v in variant_list(H) if v[0] == "none" or not only
                or any(v[0] == o[:-1] if o.endswith("$") else v[0].startswith(o) for o in only)]
    if not smoke and workers > 0:
        secs, ok = precompile([(st, opt, N, H, d, bs, causal) for _, opt, st, _ in variants], workers)
        rb.add("variants", "-", f"precompile ({len(variants)} variants, {workers} workers)", "-", secs * 1e3,
               None, None, "wall ms of the parallel warm-up compile")
    q, k, v, do = make_inputs(dev, dtype, N, H, d)
    slopes = alibi_slopes(H).to(dev)
    for pname, pattern in patterns(smoke):
        layout = sf.compile(pattern, N, block_size=bs, causal=causal, num_heads=H)
        ff, fb = rb.block_flops(layout, d), rb.block_flops(layout, d, backward=True)
        case = f"{pname} {'causal' if causal else 'non-causal'}, N={N}, H={H}, d={d}"
        outs = {}
        jobs, kinds = [], []
        for name, opt, settings, target in variants:
            apply_settings(settings)
            kw = option_kwargs(opt, slopes)

            def fn(q, k, v, kw=kw):
                return sparse_attention(q, k, v, pattern, block_size=bs, causal=causal, **kw)
            # check before timing
            if name.startswith("dropout"):
                n = min(N, 1024)
                q2, k2, v2 = (t[:, :2, :n] for t in (q, k, v))
                res = {}
                for backend in ("triton", "torch"):
                    torch.manual_seed(123)
                    res[backend] = sparse_attention(q2, k2, v2, pattern, block_size=bs, causal=causal,
                                                    backend=backend, **kw)
                err = rb.rel_err(res["triton"], res["torch"])
                bits = dropout_variant()[0]
                keep = 1 - dropout_threshold(0.1) / 2 ** bits
                rb.add("variants", case, name, "check: triton vs torch backend, same seed (same mask)",
                       err, None, None, f"{n} tokens, 2 heads; keep prob {keep:.5f}, scale "
                       f"{dropout_scale(0.1):.5f}; {'OK' if err < 0.05 else 'MASKS DIFFER?'}")
                out = fn(q, k, v)
                assert torch.isfinite(out).all(), f"{name}: output not finite"
            elif name != "none":
                out = fn(q, k, v)
                assert torch.isfinite(out).all(), f"{name}: output not finite"
                family = name.split()[0]
                if family in outs:
                    rb.add("variants", case, name, f"check: vs {outs[family][0]}", rb.rel_err(out, outs[family][1]),
                           None, None, "max|diff|/max|other|, same inputs")
                else:
                    outs[family] = (name, out)
            kinds.append((name, kernels(q, layout, **kw), target))
            jobs.append((name, fn, functools.partial(_settings_held, settings)))
        ms = time_jobs(timer, dev, case, jobs, q, k, v, do, ff, fb, suite="variants")
        for name, kind, target in kinds:
            rb.add("variants", case, name, "kernel", float("nan"), None, None, kind)
            if name != "none":
                overhead(case, name, ms["none"], ms[name], target, suite="variants")
    apply_settings({})
    if smoke or not causal or (only and not any(o.startswith("dropout") for o in only)):
        return
    fa2_dropout_overhead(timer, dev, f"dense causal, N={N}, H={H}, d={d}", q, k, v, do, bs,
                         suite="variants")


def _smoke_run(args, argv):
    """CPU run of the same code (interpreted kernels, tiny shapes): no peaks, one timed call."""
    import time

    from benchmarks.run import environment

    args.argv = sys.argv[1:] if argv is None else argv
    args.dtype, args.tiny, args.quick, args.estimate_device = "float32", True, False, None
    dev = torch.device("cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = environment(args, dev)
    meta["command"] = "TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/parity.py " + " ".join(args.argv)
    rb.peak = lambda fn, dev: (fn(), None)[1]

    def timer(fn):
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3, 1
    return dev, out, meta, timer


def main(argv=None):
    global ROUNDS, HEAT_S
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seq-len", type=int, default=16384)
    ap.add_argument("--head-dim", type=int, default=128, help="--variants: head dim (64 or 128)")
    ap.add_argument("--variants", action="store_true", help="A/B the selectable formulations (see above)")
    ap.add_argument("--non-causal", action="store_true", help="--variants: the same patterns without the causal mask")
    ap.add_argument("--workers", type=int, default=8, help="--variants: parallel compile processes (0: none)")
    ap.add_argument("--smoke", action="store_true", help="--variants on the CPU, 256 tokens (TRITON_INTERPRET=1)")
    ap.add_argument("--only", default="", help="--variants: comma-separated name prefixes to run (with 'none'), e.g. 'softcap'; "
                    "a whole name ending in '$' runs that variant only; separate with ';' when a name has a comma")
    ap.add_argument("--rounds", type=int, default=ROUNDS,
                    help="interleaved timing rounds, every other one reversed (see time_jobs)")
    ap.add_argument("--heat", type=float, default=HEAT_S,
                    help="seconds of every job in turn before the rounds (see time_jobs; 0 with --smoke)")
    ap.add_argument("--report", action="store_true", help="only redraw the PNG from --out's parity.json / variants.json")
    args = ap.parse_args(argv)
    args.suites = "variants" if args.variants else "parity"
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    ROUNDS = args.rounds
    HEAT_S = 0.0 if args.smoke else max(args.heat, 0.0)
    if args.report:
        out = Path(args.out)
        plot(json.loads((out / f"{args.suites}.json").read_text())["rows"], out / f"{args.suites}.png")
        return
    if args.smoke:
        dev, out, meta, timer = _smoke_run(args, argv)
    else:
        dev, out, meta, timer = rb.start_run(args, argv, "parity.py")
    try:
        if args.variants:
            if args.smoke:
                bench_variants(timer, dev, torch.float32, N=256, H=2, d=32, bs=64, smoke=True,
                               only=_only(args.only), causal=not args.non_causal)
            else:
                bench_variants(timer, dev, torch.bfloat16, N=args.seq_len, d=args.head_dim,
                               workers=args.workers, only=_only(args.only), causal=not args.non_causal)
        else:
            bench(timer, dev, torch.bfloat16, N=args.seq_len)
    except Exception as exc:  # keep what was measured
        rb.add(args.suites, "-", "error", "-", float("nan"), None, None, f"{type(exc).__name__}: {str(exc)[:300]}")
    rb.write_rows(out, args.suites, meta)
    try:
        plot(rb.ROWS, Path(out) / f"{args.suites}.png")
    except Exception as exc:  # noqa: BLE001 - matplotlib is optional
        print("plot skipped:", exc)


if __name__ == "__main__":
    main()
