"""Decode and chunked-prefill calls (1-16 queries against a cache, patterns or a layout compiled for
the whole length, windows, padding, GQA): the Triton decode path (interpreted) against the torch
backend and against the last rows of the full call: ``python tests/fuzz/fuzz_decode.py FIRST LAST``."""
import os, sys, random
os.environ.setdefault("TRITON_INTERPRET", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
import torch
torch.set_num_threads(1)
import sparseflash as sf
from sparseflash.attention import sparse_attention
PATS = [lambda r: sf.local(r.randint(0, 3)), lambda r: sf.dense(), lambda r: sf.butterfly(),
        lambda r: sf.bigbird(window=1, globals=1, random=r.randint(0, 2)),
        lambda r: sf.random(r.randint(1, 3), seed=r.randint(0, 99)),
        lambda r: sf.local(1) | sf.global_blocks(1), lambda r: sf.strided(3) | sf.local(0)]
a, b = int(sys.argv[1]), int(sys.argv[2])
fails = 0
for seed in range(a, b):
    r = random.Random(seed)
    pat = r.choice(PATS)(r)
    bs = r.choice([16, 32, 64]); B = r.choice([1, 2]); Hkv = r.choice([1, 2]); H = Hkv * r.choice([1, 2, 4]); d = r.choice([16, 32])
    L = r.randint(1, 300); n = r.randint(1, L); c = r.randint(1, min(n, 16))
    window = r.choice([None, None, (r.randint(0, 80), 0), (r.randint(0, 80), -1)])
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, d, generator=g); k = torch.randn(B, Hkv, L, d, generator=g); v = torch.randn(B, Hkv, L, d, generator=g)
    kpm = None
    if r.random() < 0.4:
        kpm = torch.rand(B, L, generator=g) < 0.8
        kpm[0, :r.randint(0, L)] = False
    use_layout = r.random() < 0.3
    pattern = sf.compile(pat, L, block_size=bs, causal=True, num_heads=H, window_size=window) if use_layout else pat
    kw = dict(causal=True, return_lse=True) if use_layout else dict(block_size=bs, causal=True, window_size=window, return_lse=True)
    if not use_layout or True:
        kw["key_padding_mask"] = None if kpm is None else kpm[:, :n]
    args = (q[:, :, n - c:n], k[:, :, :n], v[:, :, :n], pattern)
    try:
        out, lse = sparse_attention(*args, backend="triton", **kw)
        ref, rlse = sparse_attention(*args, backend="torch", **kw)
        # the last c rows of the full call
        full, flse = sparse_attention(q[:, :, :n], k[:, :, :n], v[:, :, :n], pattern, backend="torch", **kw)
        e1 = (out - ref).abs().max().item(); e2 = (ref - full[:, :, n - c:]).abs().max().item()
        fin = torch.isfinite(rlse)
        lse_ok = torch.equal(fin, torch.isfinite(lse)) and torch.equal(fin, torch.isfinite(flse[:, :, n - c:]))
        if e1 > 3e-5 or e2 > 1e-5 or not lse_ok or torch.isnan(out).any():
            fails += 1
            print("FAIL", seed, e1, e2, lse_ok, dict(pat=str(pat), bs=bs, B=B, H=H, Hkv=Hkv, L=L, n=n, c=c, window=window, kpm=kpm is not None, layout=use_layout), flush=True)
    except ValueError as e:
        print("VALUEERROR", seed, str(e)[:200], dict(pat=str(pat), L=L, n=n, c=c, window=window, layout=use_layout), flush=True)
    except Exception as e:
        fails += 1
        print("EXC", seed, type(e).__name__, str(e)[:300], dict(pat=str(pat), bs=bs, L=L, n=n, c=c, window=window, layout=use_layout), flush=True)
print("done fails", fails)
