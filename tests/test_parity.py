"""FlashAttention parity: dropout, softcap and ALiBi in both backends, forward and backward,
against the float64 oracle; dropout statistically (seeds, unbiasedness, finite differences)
and bit for bit between the backends (one Philox stream)."""
from __future__ import annotations

import math

import pytest
import torch

import sparseflash as sf
from sparseflash.attention import sparse_attention
from sparseflash.philox import dropout_keep
from sparseflash.reference import reference_attention, token_mask

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["torch", "triton"]


def rnd(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(DEVICE, dtype)


def inputs(B=2, H=4, Hkv=2, N=96, Nk=96, d=32, dtype=torch.float32):
    q, k, v = rnd((B, H, N, d), 1, dtype), rnd((B, Hkv, Nk, d), 2, dtype), rnd((B, Hkv, Nk, d), 3, dtype)
    return [t.requires_grad_(True) for t in (q, k, v)] + [rnd((B, H, N, d), 4, dtype)]


def positions(N, Nk):
    frame = max(N, Nk)
    return torch.arange(N) + frame - N, torch.arange(Nk) + frame - Nk


def oracle(q, k, v, do, layout, **kw):
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    out, lse = reference_attention(q64, k64, v64, layout, mask=token_mask(layout, q.shape[0]),
                                   positions=positions(q.shape[2], k.shape[2]), **kw)
    return out, lse, torch.autograd.grad(out, (q64, k64, v64), do.double())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["softcap", "alibi-heads", "alibi-batch", "both-decode-shape"])
def test_softcap_and_alibi_against_float64(case, backend):
    B, H, N, Nk = 2, 4, 96, 96
    kw = {}
    if case == "both-decode-shape":
        N = 30
        Nk = 100
    if case in ("softcap", "both-decode-shape"):
        kw["softcap"] = 0.5          # small: the cap is active on these scores
    if case == "alibi-heads" or case == "both-decode-shape":
        kw["alibi_slopes"] = torch.tensor([0.5, 0.25, 0.125, 0.0625])
    if case == "alibi-batch":
        kw["alibi_slopes"] = torch.rand(B, H, generator=torch.Generator().manual_seed(0))
    q, k, v, do = inputs(B, H, 2, N, Nk)
    pattern = sf.local(1) | sf.global_blocks(1)
    out, lse = sparse_attention(q, k, v, pattern, block_size=32, causal=True, return_lse=True,
                                backend=backend, **kw)
    grads = torch.autograd.grad(out, (q, k, v), do)
    layout = sf.compile(pattern, N, kv_len=Nk, block_size=32, causal=True, num_heads=H)
    ref, ref_lse, ref_grads = oracle(q, k, v, do, layout, **kw)
    assert (out.double() - ref).abs().max() < 2e-5
    finite = ~torch.isinf(ref_lse)
    assert (lse.double() - ref_lse)[finite].abs().max() < 2e-5
    for g, r in zip(grads, ref_grads):
        assert (g.double() - r).abs().max() < 5e-5
    # the modifiers change the result (the test could fail)
    plain = sparse_attention(q, k, v, pattern, block_size=32, causal=True, backend=backend)
    assert (plain - out).abs().max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_against_float64_with_its_mask(backend):
    """Forward and all gradients equal the oracle given the Philox mask the call drew."""
    p = 0.3
    q, k, v, do = inputs()
    pattern = sf.local(1) | sf.global_blocks(1)
    torch.manual_seed(7)
    out, lse = sparse_attention(q, k, v, pattern, block_size=32, causal=True, dropout_p=p,
                                return_lse=True, backend=backend)
    grads = torch.autograd.grad(out, (q, k, v), do)
    torch.manual_seed(7)
    from sparseflash.attention import _rng_ints
    from sparseflash.philox import draw_seed
    seed, offset = _rng_ints(draw_seed())
    B, H, N = q.shape[:3]
    bh = (torch.arange(B)[:, None] * H + torch.arange(H)[None, :])[:, :, None, None]
    keep = dropout_keep(seed, offset, bh, torch.arange(N), torch.arange(k.shape[2]), p)
    assert 0.6 < keep.float().mean() < 0.8
    layout = sf.compile(pattern, N, block_size=32, causal=True, num_heads=H)
    ref, ref_lse, ref_grads = oracle(q, k, v, do, layout, keep=keep, dropout_p=p)
    assert (out.double() - ref).abs().max() < 3e-5
    for g, r in zip(grads, ref_grads):
        assert (g.double() - r).abs().max() < 8e-5


def test_dropout_is_the_same_in_both_backends():
    q, k, v, do = inputs()
    res = {}
    for backend in BACKENDS:
        torch.manual_seed(3)
        out = sparse_attention(q, k, v, sf.dense(), block_size=32, causal=True, dropout_p=0.2,
                               backend=backend, softcap=2.0)
        res[backend] = (out, *torch.autograd.grad(out, (q, k, v), do))
    for a, b in zip(res["torch"], res["triton"]):
        assert (a - b).abs().max() < 3e-5


def test_dropout_seeds_and_unbiased_mean():
    q, k, v, _ = inputs(B=1, H=2, Hkv=2, N=64, Nk=64, d=16)
    q, k, v = (t.detach() for t in (q, k, v))
    run = lambda: sparse_attention(q, k, v, sf.dense(), block_size=32, dropout_p=0.5, backend="torch")
    torch.manual_seed(1)
    a = run()
    torch.manual_seed(1)
    assert torch.equal(a, run())                       # same seed, same output
    torch.manual_seed(2)
    assert not torch.allclose(a, run())                # another seed, another mask
    plain = sparse_attention(q, k, v, sf.dense(), block_size=32, backend="torch")
    torch.manual_seed(0)
    mean = torch.stack([run() for _ in range(300)]).mean(0)
    # each output is a mean of 64 values times Bernoulli(0.5)*2: its std over draws is about
    # |v| * sqrt(1/64); the mean of 300 draws is unbiased within a few of std / sqrt(300)
    err = (mean - plain).abs().mean().item()
    spread = (plain.abs().mean().item() + 1.0) * math.sqrt(1 / 64) / math.sqrt(300)
    assert err < 3 * spread, (err, spread)


def test_dropout_backward_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))

    def f(q, k, v):
        torch.manual_seed(11)        # the same mask at every evaluation
        return sparse_attention(q, k, v, sf.local(1), block_size=16, causal=True, dropout_p=0.25,
                                softcap=3.0, alibi_slopes=torch.tensor([0.3, 0.1]), backend="torch")
    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-5, fast_mode=True)


def test_bad_input_names_the_argument():
    q = torch.zeros(1, 2, 64, 16)
    for bad in (-0.1, 1.0, 1.5, "0.1", True):
        with pytest.raises(ValueError, match="dropout_p"):
            sparse_attention(q, q, q, sf.local(1), block_size=32, dropout_p=bad)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="softcap"):
            sparse_attention(q, q, q, sf.local(1), block_size=32, softcap=bad)
    for bad in (torch.ones(3), torch.ones(2, dtype=torch.float64), torch.ones(2, 2, 2), [0.1, 0.2]):
        with pytest.raises(ValueError, match="alibi_slopes"):
            sparse_attention(q, q, q, sf.local(1), block_size=32, alibi_slopes=bad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [100.0, 1e4, 1e8])
def test_peaked_softmax_stays_finite(scale, backend):
    """No NaN or Inf in outputs or gradients at huge scales; at scale 100 the gradients stay
    close to the float64 oracle's, and at 1e4 and above dv (and the output) within 1%."""
    q, k, v, do = inputs(B=1, H=2, Hkv=2, N=64, Nk=64, d=16)
    pattern = sf.local(1) | sf.global_blocks(1)
    out, lse = sparse_attention(q, k, v, pattern, block_size=32, causal=True, scale=scale,
                                return_lse=True, backend=backend)
    grads = torch.autograd.grad(out, (q, k, v), do)
    for t in (out, *grads):
        assert torch.isfinite(t).all()
    assert torch.isfinite(lse).all()
    layout = sf.compile(pattern, 64, block_size=32, causal=True, num_heads=2)
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref, _ = reference_attention(q64, k64, v64, layout, scale=scale)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
    if scale == 100.0:
        for g, r in zip(grads, ref_grads):
            assert (g.double() - r).abs().max() <= max(1e-3 * r.abs().max().item(), 1e-4)
    else:   # a near one-hot softmax: dv stays within 1% of its size
        dv, ref_dv = grads[2].double(), ref_grads[2]
        assert (dv - ref_dv).norm() <= 1e-2 * ref_dv.norm()
        assert (out.double() - ref).abs().max() <= 1e-2 * ref.abs().max()
