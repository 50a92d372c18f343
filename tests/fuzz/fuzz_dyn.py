"""Device-built layouts (``layout_from_block_mask`` with shared or per-batch masks, ``topk_layout``)
with random lengths, block sizes, GQA and causal, against a float64 oracle written from the mask:
``python tests/fuzz/fuzz_dyn.py FIRST LAST torch,triton``."""
import os, sys, random, time, math
os.environ.setdefault("TRITON_INTERPRET", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import torch
torch.set_num_threads(1)
import sparseflash as sf
from sparseflash.reference import reference_attention
a, b, backends = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
fails = 0
for it in range(a, b):
    r = random.Random(it)
    backend = r.choice(backends)
    bs = r.choice([16, 32, 64])
    N = r.randint(1, 160); Nk = N if r.random() < 0.5 else r.randint(1, 180)
    causal = r.random() < 0.5
    Hkv = r.choice([1, 2]); H = Hkv * r.choice([1, 2])
    B = r.choice([1, 2])
    d = r.choice([16, 32])
    ref_layout = sf.compile(sf.dense(), N, kv_len=Nk, block_size=bs)
    nq, nk = ref_layout.num_q_blocks, ref_layout.num_kv_blocks
    mh = r.choice([1, H])
    per_batch = r.random() < 0.5
    g = torch.Generator().manual_seed(it)
    shape = (B, mh, nq, nk) if per_batch else (mh, nq, nk)
    use_topk = r.random() < 0.4
    try:
        if use_topk:
            scores = torch.rand(*((B, mh, nq, nk)), generator=g)
            k = r.randint(1, nk)
            lay = sf.topk_layout(scores, k, seq_len=N, kv_len=Nk, block_size=bs, causal=causal, num_heads=H)
            # oracle mask: top-k among visible (computed independently)
            qpos0 = max(N, Nk) - N; kpos0 = max(N, Nk) - Nk
            vis = torch.ones(nq, nk, dtype=torch.bool)
            if causal:
                qb = torch.arange(nq) + qpos0 // bs; kb = torch.arange(nk) + kpos0 // bs
                # block visible iff its first key <= last query of the block (absolute)
                last_q = torch.clamp((qb + 1) * bs - 1, max=max(N, Nk) - 1)
                first_k = torch.clamp(kb * bs, min=kpos0)
                vis = first_k[None, :] <= last_q[:, None]
            sc = scores.masked_fill(~vis, float("-inf"))
            # ties: lower key kept; rand ties improbable
            kk = min(k, nk)
            top = sc.topk(kk, dim=-1).indices
            m = torch.zeros(B, mh, nq, nk, dtype=torch.bool).scatter_(-1, top, True) & vis & torch.isfinite(sc)
        else:
            m = torch.rand(*shape, generator=g) < r.choice([0.2, 0.5, 0.9])
            lay = sf.layout_from_block_mask(m, seq_len=N, kv_len=Nk, block_size=bs, causal=causal, num_heads=H)
            if not per_batch:
                m = m[None].expand(B, *m.shape)
        q = torch.randn(B, H, N, d, generator=g, requires_grad=True)
        kt = torch.randn(B, Hkv, Nk, d, generator=g, requires_grad=True)
        v = torch.randn(B, Hkv, Nk, d, generator=g, requires_grad=True)
        do = torch.randn(B, H, N, d, generator=g)
        out, lse = sf.sparse_attention(q, kt, v, lay, return_lse=True, backend=backend)
        grads = torch.autograd.grad(out, (q, kt, v), do)
        frame = max(N, Nk)
        tpos = frame - N + torch.arange(N); upos = frame - Nk + torch.arange(Nk)
        i = tpos // bs - (frame - N) // bs; j = upos // bs - (frame - Nk) // bs
        tok = m[:, :, i][:, :, :, j]
        if causal:
            tok = tok & (upos[None, :] <= tpos[:, None])
        tok = tok.expand(B, H, N, Nk)
        q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, kt, v))
        ref, rlse = reference_attention(q64, k64, v64, mask=tok)
        rg = torch.autograd.grad(ref, (q64, k64, v64), do.double())
        bad = []
        for nm, x, y in [("out", out, ref)] + list(zip("qkv", grads, rg)):
            e = (x.double() - y).abs().max().item() if x.numel() else 0
            if not (e <= 2e-4 * max(1, y.abs().max().item() if y.numel() else 0)):
                bad.append((nm, e))
        if not torch.equal(torch.isinf(lse), torch.isinf(rlse)):
            bad.append("empty rows")
        if bad:
            fails += 1
            print("FAIL", it, bad, dict(backend=backend, bs=bs, N=N, Nk=Nk, causal=causal, H=H, Hkv=Hkv, B=B, mh=mh, per_batch=per_batch, topk=use_topk), flush=True)
    except ValueError as e:
        print("VALUEERROR", it, str(e)[:200], flush=True)
    except Exception as e:
        fails += 1
        print("EXC", it, type(e).__name__, str(e)[:300], dict(backend=backend, bs=bs, N=N, Nk=Nk, causal=causal, H=H, B=B, mh=mh, per_batch=per_batch, topk=use_topk), flush=True)
print("done fails", fails)
