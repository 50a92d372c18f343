"""Seeded random combinations of everything a call can carry, against the float64 oracle.

Each case draws a pattern, block size, causal flag, lengths (not multiples of the block,
kv_len != seq_len, one-token documents), batch, GQA, head dim (80 on the torch backend),
packed documents or a batch with key padding, a token window, a scale, and the options
(softcap, ALiBi slopes of either shape, dropout). The oracle is written per document from the
Pattern itself (tests/test_real_batches.oracle_mask), with each document's own positions for
ALiBi and the dropout draws (sparseflash.philox.dropout_keep), so it shares nothing with the
compiled tables. Forward, LSE and all three gradients; no NaN or Inf; rows that see nothing
agree. The torch backend runs many cases, and a few through torch.compile against eager; the
Triton kernels (through the interpreter on the CPU, compiled on a GPU) a few, since each
costs seconds in the interpreter.
"""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash.attention import _rng_ints, sparse_attention
from sparseflash.philox import draw_seed, dropout_keep
from sparseflash.reference import reference_attention
from test_real_batches import oracle_mask

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_OK = torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"

PATTERNS = [
    lambda r: sf.local(r.randint(0, 3)),
    lambda r: sf.dense(),
    lambda r: sf.butterfly(),
    lambda r: sf.bigbird(window=1, globals=1, random=r.randint(0, 2)),
    lambda r: sf.random(r.randint(1, 3), seed=r.randint(0, 99)),
    lambda r: sf.strided(r.randint(2, 4)) | sf.local(1),
    lambda r: sf.local(1) | sf.global_blocks(1),
    lambda r: sf.columns([-1]) | sf.local(0),
]


def draw_case(seed: int, backend: str) -> dict:
    """The call's settings for case ``seed``: every choice from one seeded generator."""
    r = random.Random(seed)
    c = dict(pattern=r.choice(PATTERNS)(r), backend=backend, bs=r.choice([16, 32, 64]),
             causal=r.random() < 0.55, scale=r.choice([None, None, 0.05, 1.0]))
    c["Hkv"] = r.choice([1, 2])
    c["H"] = c["Hkv"] * r.choice([1, 2, 3])
    c["d"] = r.choice([16, 32, 80]) if backend == "torch" else r.choice([16, 32])
    if r.random() < 0.35:                                   # packed documents
        c["B"] = 1
        q_lens = [r.choice([1, 2, r.randint(1, 150)]) for _ in range(r.randint(1, 4))]
        k_lens = (q_lens if r.random() < 0.6 else
                  [max(1, n + r.randint(-5, 60)) if r.random() < 0.8 else n for n in q_lens])
        c["q_lens"], c["k_lens"], c["packed"] = q_lens, k_lens, True
    else:
        c["B"] = r.choice([1, 2])
        n = r.randint(1, 200)
        c["q_lens"], c["k_lens"] = [n], [n if r.random() < 0.5 else r.randint(1, 220)]
        c["packed"] = False
    c["window"] = ((r.choice([-1, 0, 5, 40]), r.choice([-1, 0, 3, 40])) if r.random() < 0.3 else None)
    c["kpm"] = None
    if r.random() < 0.3:
        nk = sum(c["k_lens"])
        kpm = torch.rand(c["B"], nk, generator=torch.Generator().manual_seed(seed)) < r.choice([0.4, 0.9, 1.0])
        if r.random() < 0.5:
            kpm[-1, r.randint(0, nk - 1):] = False          # right padding, crossing blocks
        c["kpm"] = kpm
    c["softcap"] = r.choice([0.3, 1.0, 5.0, 30.0]) if r.random() < 0.35 else 0.0
    c["alibi"] = None
    if r.random() < 0.35:
        shape = (c["H"],) if r.random() < 0.5 else (c["B"], c["H"])
        c["alibi"] = torch.rand(*shape, generator=torch.Generator().manual_seed(seed + 1))
    c["dropout_p"] = r.choice([0.0, 0.0, 0.0, 0.1, 0.5])
    return c


def _oracle(c, q, k, v, do, seed):
    """float64 out, lse and grads, document by document (each its own positions)."""
    B, H = q.shape[0], q.shape[1]
    q_lens, k_lens = (c["q_lens"], c["k_lens"]) if c["packed"] else ([q.shape[2]], [k.shape[2]])
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    outs, lses = [], []
    rng = None
    if c["dropout_p"] > 0:
        torch.manual_seed(seed)
        rng = _rng_ints(draw_seed())
    qs = ks = 0
    for ql, kl in zip(q_lens, k_lens):
        qsl, ksl = slice(qs, qs + ql), slice(ks, ks + kl)
        kpm = None if c["kpm"] is None else c["kpm"][:, ksl]
        mask = oracle_mask(c["pattern"], H, [ql], [kl], c["bs"], c["causal"], c["window"], kpm, B)
        frame = max(ql, kl)
        qpos, kpos = torch.arange(ql) + frame - ql, torch.arange(kl) + frame - kl
        kw = dict(softcap=c["softcap"], alibi_slopes=c["alibi"], positions=(qpos, kpos))
        if rng is not None:
            bh = (torch.arange(B)[:, None] * H + torch.arange(H)[None, :])[:, :, None, None]
            kw.update(keep=dropout_keep(rng[0], rng[1], bh, torch.arange(qs, qs + ql), kpos,
                                        c["dropout_p"], positions=qpos),
                      dropout_p=c["dropout_p"])
        o, lse = reference_attention(q64[:, :, qsl], k64[:, :, ksl], v64[:, :, ksl], scale=c["scale"],
                                     mask=mask, **kw)
        outs.append(o)
        lses.append(lse)
        qs, ks = qs + ql, ks + kl
    out, lse = torch.cat(outs, dim=2), torch.cat(lses, dim=2)
    grads = torch.autograd.grad(out, (q64, k64, v64), do.double())
    return out, lse, grads


def call_inputs(c: dict, seed: int, device=DEVICE):
    """Case ``c``'s q, k, v (leaves that require grad), dO and ``sparse_attention`` keywords
    (all but ``return_lse``), on ``device``."""
    g = torch.Generator().manual_seed(seed)
    nq, nk = sum(c["q_lens"]), sum(c["k_lens"])
    q = torch.randn(c["B"], c["H"], nq, c["d"], generator=g)
    k = torch.randn(c["B"], c["Hkv"], nk, c["d"], generator=g)
    v = torch.randn(c["B"], c["Hkv"], nk, c["d"], generator=g)
    do = torch.randn(c["B"], c["H"], nq, c["d"], generator=g)
    q, k, v = (t.to(device).requires_grad_(True) for t in (q, k, v))
    kw = dict(block_size=c["bs"], causal=c["causal"], scale=c["scale"], window_size=c["window"],
              key_padding_mask=None if c["kpm"] is None else c["kpm"].to(device),
              softcap=c["softcap"], dropout_p=c["dropout_p"], backend=c["backend"],
              alibi_slopes=None if c["alibi"] is None else c["alibi"].to(device))
    if c["packed"]:
        kw["cu_seqlens"] = torch.tensor(np.cumsum([0] + c["q_lens"]), dtype=torch.int32, device=device)
        kw["cu_seqlens_k"] = torch.tensor(np.cumsum([0] + c["k_lens"]), dtype=torch.int32, device=device)
    return q, k, v, do.to(device), kw


def run_case(seed: int, backend: str) -> None:
    c = draw_case(seed, backend)
    q, k, v, do, kw = call_inputs(c, seed)
    torch.manual_seed(seed)
    out, lse = sparse_attention(q, k, v, c["pattern"], return_lse=True, **kw)
    grads = torch.autograd.grad(out, (q, k, v), do)
    ref, ref_lse, ref_grads = _oracle(c, q.cpu(), k.cpu(), v.cpu(), do.cpu(), seed)
    where = {key: val for key, val in c.items() if key not in ("kpm", "alibi")}
    for name, t in [("out", out), ("lse", lse.nan_to_num(neginf=0.0))] + list(zip(("dq", "dk", "dv"), grads)):
        assert torch.isfinite(t).all(), f"{name} not finite: {where}"
    assert torch.equal(torch.isinf(lse).cpu(), torch.isinf(ref_lse)), f"rows that see nothing: {where}"
    for name, a, b in [("out", out, ref)] + list(zip(("dq", "dk", "dv"), grads, ref_grads)):
        tol = 2e-4 * max(1.0, b.abs().max().item())
        err = (a.cpu().double() - b).abs().max().item()
        assert err <= tol, f"{name}: error {err:.2e} > {tol:.2e}: {where}"
    finite = ~torch.isinf(ref_lse)
    if finite.any():
        assert (lse.cpu().double() - ref_lse)[finite].abs().max().item() <= 1e-4, f"lse: {where}"


def test_cases_cover_every_feature():
    """The draws reach every feature the file claims, so no part of it is dead."""
    cases = [draw_case(s, "torch") for s in range(120)]
    assert any(c["packed"] and 1 in c["q_lens"] for c in cases)
    assert any(c["packed"] and c["k_lens"] != c["q_lens"] for c in cases)
    assert any(not c["packed"] and c["k_lens"] != c["q_lens"] for c in cases)
    assert any(c["kpm"] is not None and c["packed"] for c in cases)
    assert any(c["kpm"] is not None and c["B"] == 2 for c in cases)
    assert any(c["window"] is not None for c in cases)
    assert any(c["H"] > c["Hkv"] for c in cases) and any(c["d"] == 80 for c in cases)
    assert any(c["alibi"] is not None and c["alibi"].dim() == 2 for c in cases)
    assert any(c["dropout_p"] > 0 and c["softcap"] > 0 and c["alibi"] is not None for c in cases)
    assert any(c["dropout_p"] > 0 and c["packed"] for c in cases)


@pytest.mark.parametrize("seed", range(120))
def test_torch_backend_random_combination(seed):
    run_case(seed, "torch")


@pytest.mark.skipif(not TRITON_OK, reason="the Triton kernels need CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("seed", range(1000, 1012))
def test_triton_kernels_random_combination(seed):
    run_case(seed, "triton")


@pytest.mark.parametrize("seed", range(2000, 2008))
def test_compiled_random_combination(seed):
    """The same draws through ``torch.compile(fullgraph=True, dynamic=True)`` (aot_eager,
    torch backend): forward and gradients equal the eager call's. Dropout is left out (the
    compiled graph draws its seed through its own random stream)."""
    c = dict(draw_case(seed, "torch"), dropout_p=0.0)
    q, k, v, _, kw = call_inputs(c, seed, "cpu")

    def f(q, k, v):
        return sparse_attention(q, k, v, c["pattern"], **kw)
    compiled = torch.compile(f, fullgraph=True, dynamic=True, backend="aot_eager")
    outs = []
    for fn in (f, compiled):
        out = fn(q, k, v)
        outs.append((out, *torch.autograd.grad(out.sum(), (q, k, v))))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
