"""Cost of the FlashAttention-parity options (issue 11), side by side in one run:

* ``dropout``: ``dropout_p=0.1`` against ``0`` at 16K tokens, d=128, H=16, bf16, forward and
  forward+backward, for dense causal and ``local(8) | global_blocks(1)`` causal; beside it the
  same overhead for FlashAttention-2 (``scaled_dot_product_attention`` with ``dropout_p`` on
  the FLASH_ATTENTION backend, dense causal).
* ``softcap``: ``softcap=30`` against off, same shapes.
* ``alibi``: ``alibi_slopes`` (flash-attn's geometric slopes, shape (H,)) against off.

Each row gives ms, TFLOP/s on computed blocks and peak memory; the ``overhead`` rows give the
time with the option divided by the time without it, from the same run. Before timing, the
option's forward is checked: softcap/ALiBi against an SDPA run with the same bias (dense
causal), dropout for finiteness and the kept fraction. Usage:
``PYTHONPATH=. python benchmarks/parity.py --out DIR``; writes ``parity.json`` and ``parity.csv``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import sparseflash as sf
from sparseflash.attention import sparse_attention

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import real_batches as rb  # noqa: E402


def alibi_slopes(H: int) -> torch.Tensor:
    """The ALiBi paper's slopes 2^(-8 h / H), h = 1..H."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], dtype=torch.float32)


def time_case(timer, dev, case, name, fn, q, k, v, do, flops_fwd, flops_bwd):
    ms_f, _ = timer(lambda: fn(q, k, v))
    rb.add("parity", case, name, "fwd", ms_f, flops_fwd, rb.peak(lambda: fn(q, k, v), dev))
    qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))

    def step():
        return torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), do)
    ms_b, _ = timer(step)
    rb.add("parity", case, name, "fwd+bwd", ms_b, flops_bwd, rb.peak(step, dev))
    return ms_f, ms_b


def overhead(case, name, base, with_opt, target):
    for i, p in enumerate(("fwd", "fwd+bwd")):
        ratio = with_opt[i] / base[i]
        rb.add("parity", case, name, f"overhead {p}", ratio, None, None,
               f"time with ÷ time without, same run; target <= {target:.2f}: "
               f"{'met' if ratio <= target else 'NOT met'}")


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
        base = time_case(timer, dev, case, "sparseflash", ours(), q, k, v, do, ff, fb)
        # correctness before timing the options
        if pname == "dense":      # on 2K tokens: the SDPA reference materialises the bias
            n = 2048
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
        for opt_name, opt, target in (("dropout_p=0.1", dict(dropout_p=0.1), 1.15),
                                      ("softcap=30", dict(softcap=30.0), 1.10),
                                      ("alibi_slopes (H,)", dict(alibi_slopes=slopes), 1.10)):
            with_opt = time_case(timer, dev, case, f"sparseflash {opt_name}", ours(**opt), q, k, v, do, ff, fb)
            overhead(case, f"sparseflash {opt_name}", base, with_opt, target)
    # FlashAttention-2 (SDPA's flash backend) with and without dropout, dense causal
    from torch.nn.attention import SDPBackend, sdpa_kernel

    layout = sf.compile(sf.dense(), N, block_size=bs, causal=True, num_heads=H)
    ff, fb = rb.block_flops(layout, d), rb.block_flops(layout, d, backward=True)
    case = f"dense causal, N={N // 1024}K, H={H}, d={d}"

    def fa2(p):
        def fn(q, k, v):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return fn
    base = time_case(timer, dev, case, "FA2 (SDPA flash)", fa2(0.0), q, k, v, do, ff, fb)
    with_opt = time_case(timer, dev, case, "FA2 (SDPA flash) dropout_p=0.1", fa2(0.1), q, k, v, do, ff, fb)
    overhead(case, "FA2 (SDPA flash) dropout_p=0.1", base, with_opt, float("inf"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seq-len", type=int, default=16384)
    args = ap.parse_args(argv)
    args.suites = "parity"
    dev, out, meta, timer = rb.start_run(args, argv, "parity.py")
    try:
        bench(timer, dev, torch.bfloat16, N=args.seq_len)
    except Exception as exc:  # keep what was measured
        rb.add("parity", "-", "error", "-", float("nan"), None, None, f"{type(exc).__name__}: {str(exc)[:300]}")
    rb.write_rows(out, "parity", meta)


if __name__ == "__main__":
    main()
