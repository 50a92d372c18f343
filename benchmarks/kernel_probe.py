"""GPU probe for the block-sparse kernels: correctness vs float64, then timings vs peers.

One entry point, named suites:

    PYTHONPATH=. python3 benchmarks/kernel_probe.py --suites check,dense,sparse --out $OUT

* ``check``: fresh random inputs per case; forward, lse, dq, dk, dv vs a float64 dense
  reference; error ratio vs a same-dtype eager PyTorch implementation (FlashAttention rule);
  NaN check; determinism of the backward; a transposed (B, N, H, d) view; N=16K d=128 vs SDPA.
* ``dense``: H*d = 2048, B*N = 16384 (FlashAttention papers' shapes), causal and not, TFLOP/s
  of ours, FlexAttention (torch.compile) and SDPA, forward and forward+backward.
* ``sparse``: block-128 local / butterfly / bigbird / strided at N=16K, d=128, H=16, B=1.
* ``tune``: forward/backward tile variants through the launchers directly.

Writes CSV rows to ``<out>/probe.csv`` and prints a short table last. Peers that are missing
are reported and skipped, never fatal.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import time
import traceback

import torch

import sparseflash as sf
from sparseflash.attention import sparse_attention
from sparseflash.reference import reference_attention

ROWS = []
JSONL = None  # rows are also appended here as they come, so a killed run keeps them


def log(**row):
    import json

    ROWS.append(row)
    print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    if JSONL:
        with open(JSONL, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")


def bench(fn):
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


# ---------------------------------------------------------------------- correctness
def eager_attention(q, k, v, mask, scale):
    """Same-dtype eager implementation: matmuls in q's dtype, softmax in fp32."""
    H, Hkv = q.shape[1], k.shape[1]
    k = k.repeat_interleave(H // Hkv, 1)
    v = v.repeat_interleave(H // Hkv, 1)
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.float().masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0).to(q.dtype)
    return p @ v


def check_case(name, pattern, B, H, Hkv, N, Nk, d, bs, causal, dtype, transposed=False):
    dev = "cuda"
    L = sf.compile(pattern, N, kv_len=Nk, block_size=bs, causal=causal, num_heads=H)
    if transposed:
        q = torch.randn(B, N, H, d, device=dev, dtype=dtype).transpose(1, 2)
        k = torch.randn(B, Nk, Hkv, d, device=dev, dtype=dtype).transpose(1, 2)
        v = torch.randn(B, Nk, Hkv, d, device=dev, dtype=dtype).transpose(1, 2)
    else:
        q = torch.randn(B, H, N, d, device=dev, dtype=dtype)
        k = torch.randn(B, Hkv, Nk, d, device=dev, dtype=dtype)
        v = torch.randn(B, Hkv, Nk, d, device=dev, dtype=dtype)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    do = torch.randn(B, H, N, d, device=dev, dtype=dtype)
    out, lse = sparse_attention(q, k, v, L, block_size=bs, causal=causal, return_lse=True)
    grads = torch.autograd.grad(out, (q, k, v), do)
    grads2 = torch.autograd.grad(sparse_attention(q, k, v, L, block_size=bs, causal=causal),
                                 (q, k, v), do)
    deterministic = all(torch.equal(a, b) for a, b in zip(grads, grads2))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, ref_lse = reference_attention(q64, k64, v64, L)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
    mask = torch.stack([torch.from_numpy(L.to_token_mask(h)) for h in range(H)]).to(dev)[None]
    qe, ke, ve = (t.detach().clone().requires_grad_() for t in (q, k, v))
    eo = eager_attention(qe, ke, ve, mask, 1 / math.sqrt(d))
    e_grads = torch.autograd.grad(eo, (qe, ke, ve), do)
    finite = all(torch.isfinite(t).all().item() for t in (out, *grads))
    lse_ok = torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    fin = torch.isfinite(ref_lse)
    lse_err = (lse.double() - ref_lse)[fin].abs().max().item() if fin.any() else 0.0
    worst = 0.0
    parts = {}
    for nm, ours, eager, ref_t in zip(("o", "dq", "dk", "dv"), (out, *grads), (eo, *e_grads),
                                      (ref, *ref_grads)):
        e_ours = (ours.double() - ref_t).abs().max().item()
        e_eager = (eager.double() - ref_t).abs().max().item()
        ratio = e_ours / (e_eager + 1e-5)
        parts[nm] = f"{e_ours:.2e}/{e_eager:.2e}"
        worst = max(worst, ratio)
    ok = finite and lse_ok and deterministic and worst <= 3.0 and lse_err < 1e-2
    log(suite="check", case=name, dtype=str(dtype).split(".")[-1], ok=ok, worst_ratio=f"{worst:.2f}",
        lse_err=f"{lse_err:.1e}", finite=finite, deterministic=deterministic, **parts)
    return ok


def suite_check():
    P = sf
    bf, fp, f32 = torch.bfloat16, torch.float16, torch.float32
    cases = [
        ("dense-B2-H4-N1024-D128-bs128", P.dense(), 2, 4, 4, 1024, 1024, 128, 128, False, bf),
        ("causal-B2-H4-N1000-D64-bs128", P.dense(), 2, 4, 4, 1000, 1000, 64, 128, True, bf),
        ("causal-B1-H4-N777-D128-bs64-fp16", P.dense(), 1, 4, 4, 777, 777, 128, 64, True, fp),
        ("local2-B1-H4-N1024-D128-bs128", P.local(2), 1, 4, 4, 1024, 1024, 128, 128, False, bf),
        ("butterfly-B1-H4-N1024-D64-bs64", P.butterfly(), 1, 4, 4, 1024, 1024, 64, 64, False, fp),
        ("bigbird-B1-H4-N1100-D96-bs64", P.bigbird(), 1, 4, 4, 1100, 1100, 96, 64, False, bf),
        ("random-B1-H4-N900-D80-bs32", P.random(3), 1, 4, 4, 900, 900, 80, 32, False, fp),
        ("perhead-GQA-B2-H4-Hkv2-N500-D64-bs64-causal",
         P.per_head(P.local(1), P.dense(), P.butterfly(), P.random(2)), 2, 4, 2, 500, 500, 64, 64, True, bf),
        ("MQA-B1-H8-Hkv1-N640-D128-bs128-causal", P.dense(), 1, 8, 1, 640, 640, 128, 128, True, bf),
        ("kv<q-causal-B1-H2-N700-Nk300-D64-bs64", P.dense(), 1, 2, 2, 700, 300, 64, 64, True, bf),
        ("kv>q-causal-B1-H2-N300-Nk700-D64-bs64", P.local(2), 1, 2, 2, 300, 700, 64, 64, True, fp),
        ("D192-B1-H2-N512-bs128-causal", P.dense(), 1, 2, 2, 512, 512, 192, 128, True, bf),
        ("D256-B1-H2-N512-bs128", P.local(1), 1, 2, 2, 512, 512, 256, 128, False, bf),
        ("D16-B1-H2-N300-bs32", P.dense(), 1, 2, 2, 300, 300, 16, 32, True, fp),
        ("fp32-B1-H2-N300-D64-bs64-causal", P.dense(), 1, 2, 2, 300, 300, 64, 64, True, f32),
        ("transposed-B2-H4-N600-D64-bs128-causal", P.dense(), 2, 4, 4, 600, 600, 64, 128, True, bf),
    ]
    n_ok = 0
    for c in cases:
        try:
            n_ok += check_case(*c, transposed=c[0].startswith("transposed"))
        except Exception as e:  # keep going: one failure must not hide the others
            log(suite="check", case=c[0], ok=False, error=repr(e)[:300])
            traceback.print_exc()
    log(suite="check", case="SUMMARY", ok=n_ok == len(cases), passed=f"{n_ok}/{len(cases)}")
    big_case()


def big_case():
    """N=16K, d=128, bf16 vs SDPA (the float64 reference would need N^2 memory)."""
    import torch.nn.functional as F

    for causal in (False, True):
        B, H, N, d = 1, 8, 16384, 128
        q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        do = torch.randn_like(q)
        out = sparse_attention(q, k, v, sf.dense(), causal=causal)
        g = torch.autograd.grad(out, (q, k, v), do)
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
        rg = torch.autograd.grad(ref, (q, k, v), do.float())
        errs = [((a.float() - b).norm() / b.norm()).item() for a, b in zip((out, *g), (ref, *rg))]
        finite = all(torch.isfinite(t).all().item() for t in (out, *g))
        log(suite="check", case=f"big-N16K-D128-causal{int(causal)}", ok=finite and max(errs) < 2e-2,
            rel_err_o_dq_dk_dv=",".join(f"{e:.1e}" for e in errs), finite=finite)
        del q, k, v, do, out, g, ref, rg
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------- timing
def peers():
    p = {}
    try:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = 1000
        if hasattr(torch._dynamo.config, "recompile_limit"):
            torch._dynamo.config.recompile_limit = 1000
        if hasattr(torch._dynamo.config, "accumulated_recompile_limit"):
            torch._dynamo.config.accumulated_recompile_limit = 10000
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        # dynamic=False: after the first shape change dynamo would otherwise compile a
        # dynamic-shape kernel, which ran ~25% slower in run 2 (benchmarks/NOTES.md)
        p["flex"] = (torch.compile(flex_attention, dynamic=False), create_block_mask)
    except Exception as e:
        print("flex unavailable:", e)
    return p


def flex_mask(create_block_mask, layout, B, H, N, Nk):
    if layout is None:
        return None
    blk = torch.from_numpy(layout.to_dense()).cuda()          # [H, nq, nk]
    bs, causal, off = layout.block_size, layout.causal, Nk - N
    shared = layout.table_heads == 1
    blk0 = blk[0]

    def mask_mod(b, h, q_idx, kv_idx):
        m = blk0[q_idx // bs, kv_idx // bs] if shared else blk[h, q_idx // bs, kv_idx // bs]
        if causal:
            m = m & (kv_idx <= q_idx + off)
        return m

    return create_block_mask(mask_mod, None, None if shared else H, N, Nk, device="cuda", BLOCK_SIZE=bs)


def time_variants(tag, B, H, N, d, layout, causal, flops_fwd, peer, sdpa=True, flex_dense=False):
    import torch.nn.functional as F

    dt = torch.bfloat16
    q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=dt, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    runs = {"ours": lambda: sparse_attention(q, k, v, layout, block_size=layout.block_size, causal=causal)}
    if B * H * N * d <= 2 ** 25:
        # the launcher alone: the gap to "ours" is host overhead of validation and dispatch
        from sparseflash.kernels import launch

        t = layout.to("cuda")
        kw = dict(scale=d ** -0.5)
        runs["ours-launch"] = lambda: launch.attention_forward(q, k, v, layout, t, **kw)[0]
    if "flex" in peer:
        flex, cbm = peer["flex"]
        try:
            if flex_dense:
                bm = None if not causal else cbm(lambda b, h, qi, ki: ki <= qi, None, None, N, N, device="cuda")
            else:
                bm = flex_mask(cbm, layout, B, H, N, N)
            runs["flex"] = lambda: flex(q, k, v, block_mask=bm)
        except Exception as e:
            print("flex mask failed:", repr(e)[:200])
    if sdpa:
        runs["sdpa"] = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def cudnn():
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            cudnn()
            runs["cudnn"] = cudnn
        except Exception as e:
            print("cudnn sdpa unavailable:", repr(e)[:120])
    res = {}
    for name, fn in runs.items():
        try:
            with torch.no_grad():
                t_f = bench(fn)

            def fb():
                o = fn()
                o.backward(do)
            t_fb = bench(fb) if name != "ours-launch" else float("nan")
            res[name] = (t_f, t_fb)
            log(suite=tag, impl=name, B=B, H=H, N=N, d=d, causal=causal,
                density=f"{layout.density:.3f}", fwd_ms=f"{t_f:.4f}", fb_ms=f"{t_fb:.4f}",
                fwd_tflops=f"{flops_fwd / t_f * 1e-9:.0f}", fb_tflops=f"{3.5 * flops_fwd / t_fb * 1e-9:.0f}")
        except Exception as e:
            log(suite=tag, impl=name, N=N, d=d, causal=causal, error=repr(e)[:300])
    return res


def suite_dense(peer):
    summary = []
    for d in (128, 64):
        for N in (1024, 4096, 16384):
            for causal in (False, True):
                if causal and N == 1024:
                    continue
                B, H = 16384 // N, 2048 // d
                L = sf.compile(sf.dense(), N, block_size=128, causal=causal, num_heads=H)
                flops = 4 * B * H * N * N * d / (2 if causal else 1)
                r = time_variants("dense", B, H, N, d, L, causal, flops, peer, flex_dense=True)
                summary.append((f"dense d={d} N={N} causal={int(causal)}", flops, r))
    return summary


def suite_sparse(peer):
    summary = []
    B, H, N, d = 1, 16, 16384, 128
    pats = [("local(8)", sf.local(8)), ("butterfly", sf.butterfly()), ("bigbird", sf.bigbird(3, 1, 3)),
            ("strided(8)", sf.strided(8)), ("local(8)+causal", sf.local(8))]
    for name, p in pats:
        causal = name.endswith("causal")
        L = sf.compile(p, N, block_size=128, causal=causal, num_heads=H)
        flops = 4 * B * H * N * N * d * L.density
        r = time_variants("sparse", B, H, N, d, L, causal, flops, peer, sdpa=False)
        summary.append((f"sparse {name} dens={L.density:.3f}", flops, r))
    return summary


def suite_tune(d_list=(128, 64), N=4096):
    """Tile variants, pointer vs TMA loads, through the launchers (no autograd), dense, B*N=16K."""
    from sparseflash.kernels import launch

    F, Bc = launch.FwdConfig, launch.BwdConfig
    fwd_cfgs = {128: [F(128, 128, 8, 3), F(128, 64, 8, 3), F(128, 128, 8, 2)],
                64: [F(128, 128, 4, 3), F(128, 64, 4, 3), F(128, 64, 8, 3)]}
    bwd_cfgs = {128: [Bc(64, 128, 128, 64, 8, 2), Bc(64, 128, 128, 64, 8, 3), Bc(64, 64, 64, 64, 4, 3),
                      Bc(32, 128, 128, 32, 8, 3)],
                64: [Bc(64, 64, 64, 64, 4, 3), Bc(64, 128, 128, 64, 8, 2), Bc(32, 64, 64, 32, 4, 3),
                     Bc(64, 128, 128, 64, 8, 3)]}
    for d in d_list:
        for causal in (False, True):
            B, H = 16384 // N, 2048 // d
            L = sf.compile(sf.dense(), N, block_size=128, causal=causal, num_heads=H)
            t = L.to("cuda")
            q, k, v, do = (torch.randn(B, H, N, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
            flops = 4 * B * H * N * N * d / (2 if causal else 1)
            kw = dict(scale=d ** -0.5)
            o, lse = launch.attention_forward(q, k, v, L, t, **kw)
            for tma in (False, True):
                for cfg in fwd_cfgs[d]:
                    try:
                        o2, _ = launch.attention_forward(q, k, v, L, t,
                                                         config=cfg, use_tma=tma, **kw)
                        err = (o2.float() - o.float()).abs().max().item()
                        ms = bench(lambda: launch.attention_forward(q, k, v, L, t,
                                                                    config=cfg, use_tma=tma, **kw))
                        log(suite="tune-fwd", N=N, d=d, causal=causal, tma=tma, cfg=str(cfg), ms=f"{ms:.4f}",
                            tflops=f"{flops / ms * 1e-9:.0f}", diff_vs_default=f"{err:.1e}")
                    except Exception as e:
                        log(suite="tune-fwd", N=N, d=d, causal=causal, tma=tma, cfg=str(cfg), error=repr(e)[:300])
                for cfg in bwd_cfgs[d]:
                    args = (do, q, k, v, o, lse, L, t)
                    try:
                        ms = bench(lambda: launch.attention_backward(*args, config=cfg, use_tma=tma, **kw))
                        log(suite="tune-bwd", N=N, d=d, causal=causal, tma=tma, cfg=str(cfg), ms=f"{ms:.4f}",
                            tflops=f"{2.5 * flops / ms * 1e-9:.0f}")
                    except Exception as e:
                        log(suite="tune-bwd", N=N, d=d, causal=causal, tma=tma, cfg=str(cfg), error=repr(e)[:300])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suites", default="check,dense,sparse")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--tma", choices=["auto", "on", "off"], default="auto",
                    help="force tensor-descriptor loads on/off in the public path")
    ap.add_argument("--tune-n", type=int, default=4096)
    args = ap.parse_args()
    global JSONL
    JSONL = os.path.join(args.out, "probe.jsonl")
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    import triton

    print("triton", triton.__version__, flush=True)
    suites = args.suites.split(",")
    from sparseflash.kernels import launch

    launch.USE_TMA = {"auto": None, "on": True, "off": False}[args.tma]
    print("USE_TMA", launch.USE_TMA, flush=True)
    summary = []
    peer = peers() if ("dense" in suites or "sparse" in suites) else {}
    t0 = time.time()
    try:
        if "check" in suites:
            suite_check()
        if "tune" in suites:
            suite_tune(N=args.tune_n)
        if "dense" in suites:
            summary += suite_dense(peer)
        if "sparse" in suites:
            summary += suite_sparse(peer)
    finally:
        keys = sorted({k for r in ROWS for k in r})
        with open(os.path.join(args.out, "probe.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(ROWS)
    print(f"\n# total {time.time() - t0:.0f}s")
    for r in ROWS:
        if r.get("suite") == "check":
            print("CHECK", r.get("case"), "ok" if r.get("ok") else "FAIL", r.get("worst_ratio", ""),
                  r.get("passed", ""), r.get("rel_err_o_dq_dk_dv", ""), r.get("error", ""))
    for r in ROWS:
        if r.get("suite", "").startswith("tune"):
            print("TUNE", r["suite"], f"N={r.get('N')} d={r.get('d')} c={int(r.get('causal'))} tma={int(r.get('tma'))}",
                  r.get("cfg", "").replace("Config", ""), r.get("tflops", r.get("error", "")), r.get("diff_vs_default", ""))
    print(f"{'case':42s} {'ours f/fb TF':>14s} {'flex f/fb TF':>14s} {'sdpa':>10s} {'cudnn':>10s} {'f ratio':>7s} {'fb ratio':>8s}")
    for name, flops, r in summary:
        def tf(key):
            if key not in r:
                return "-"
            return f"{flops / r[key][0] * 1e-9:.0f}/{3.5 * flops / r[key][1] * 1e-9:.0f}"
        ratio_f = ratio_fb = "-"
        if "ours" in r and "flex" in r:
            ratio_f = f"{r['flex'][0] / r['ours'][0]:.2f}"
            ratio_fb = f"{r['flex'][1] / r['ours'][1]:.2f}"
        print(f"{name:42s} {tf('ours'):>14s} {tf('flex'):>14s} {tf('sdpa'):>10s} {tf('cudnn'):>10s} {ratio_f:>7s} {ratio_fb:>8s}")


if __name__ == "__main__":
    main()
