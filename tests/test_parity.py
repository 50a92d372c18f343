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


def test_softcap_fixed_shift_decision():
    """``launch._portable_softcap``: the portable forward's fixed shift (HAS_SOFTCAP + 10) for
    the folded softcap in base 2 with bfloat16 or float32, no ALiBi, softcap <= 62.4; off with
    the switch, which takes only None/True/False."""
    from sparseflash.kernels import launch

    f = launch._portable_softcap
    assert f(2, 30.0, 0, torch.float32, False) == 12
    assert f(2, 62.0, 0, torch.bfloat16, False) == 12
    assert f(2, 63.0, 0, torch.float32, False) == 2            # span over 180 in log2 units
    assert f(2, 30.0, 0, torch.float16, False) == 2            # fp16's P would underflow
    assert f(2, 30.0, 1, torch.float32, False) == 2            # ALiBi
    assert f(2, 30.0, 0, torch.float32, True) == 2             # natural units (huge scale)
    assert f(1, 30.0, 0, torch.float32, False) == 1            # the plain variant
    old = launch.SOFTCAP_SHIFT
    try:
        launch.SOFTCAP_SHIFT = False
        assert f(2, 30.0, 0, torch.float32, False) == 2
        launch.SOFTCAP_SHIFT = "yes"
        with pytest.raises(ValueError, match="SOFTCAP_SHIFT must be None, True or False"):
            f(2, 30.0, 0, torch.float32, False)
    finally:
        launch.SOFTCAP_SHIFT = old


@pytest.mark.parametrize("softcap,dtype", [(62.0, torch.float32), (30.0, torch.bfloat16), (2.0, torch.float32)],
                         ids=["cap62-fp32", "cap30-bf16", "cap2-fp32"])
def test_softcap_fixed_shift_at_its_extremes(softcap, dtype, monkeypatch):
    """The portable forward's fixed shift (the Triton kernels, interpreted on the CPU): a third
    of the rows see every key at -cap (exponentials near 2^-115 at cap 62), a third at +cap,
    the rest random; kv_len > seq_len, lengths off the block. Output, LSE and every gradient
    within twice the running max's error against the float64 oracle (plus the dtype's floor),
    and the shift is what ran."""
    from sparseflash.kernels import launch

    B, H, N, Nk, d = 1, 2, 70, 90, 32
    assert launch._portable_softcap(2, softcap, 0, dtype, False) == 12
    g = torch.Generator().manual_seed(5)
    u = torch.randn(d, generator=g)
    u = u / u.norm() * 4.0
    k = u + 0.3 * torch.randn(B, H, Nk, d, generator=g)
    q = torch.randn(B, H, N, d, generator=g)
    rows = torch.arange(N) % 3
    q[:, :, rows == 0] = -2.0 * softcap * u
    q[:, :, rows == 1] = 2.0 * softcap * u
    v = torch.randn(B, H, Nk, d, generator=g)
    do = torch.randn(B, H, N, d, generator=g)
    q, k, v, do = (t.to(DEVICE, dtype) for t in (q, k, v, do))
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    pattern = sf.local(1) | sf.global_blocks(1)

    def run():
        out, lse = sparse_attention(q, k, v, pattern, block_size=32, causal=True, return_lse=True,
                                    backend="triton", softcap=softcap)
        return (out, lse, *torch.autograd.grad(out, (q, k, v), do))

    calls = []
    real = launch._portable_softcap
    monkeypatch.setattr(launch, "_portable_softcap", lambda *a: calls.append(real(*a)) or calls[-1])
    got = run()
    monkeypatch.setattr(launch, "SOFTCAP_SHIFT", False)
    running = run()
    assert calls and calls[0] == 12 and calls[-1] == 2, calls
    layout = sf.compile(pattern, N, kv_len=Nk, block_size=32, causal=True, num_heads=H)
    ref, ref_lse, ref_grads = oracle(q, k, v, do, layout, softcap=softcap)
    finite = ~torch.isinf(ref_lse)
    floor = 1e-2 if dtype == torch.bfloat16 else 1e-5
    for name, h, r_run, r in zip(("out", "lse", "dq", "dk", "dv"), got, running, (ref, ref_lse, *ref_grads)):
        sel = finite if name == "lse" else torch.ones_like(r, dtype=torch.bool)
        assert torch.isfinite(h[sel]).all(), name
        e_h = (h.double() - r)[sel].abs().max().item()
        e_r = (r_run.double() - r)[sel].abs().max().item()
        assert e_h <= 2 * e_r + floor * max(r.abs().max().item(), 1.0), (name, e_h, e_r)


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_overflow_is_refused(backend):
    """No NaN at any finite scale: a scale whose scores could pass float32's range (|scale| times
    the largest row norms of q and k at a quarter of its maximum, or a scale it cannot hold) is
    refused with a ValueError naming scale, softcap or not; one just inside the bound runs with
    finite outputs, LSE and gradients. Before stop 72, scale 1e38 gave NaN in both backends."""
    q, k, v, do = inputs(B=1, H=2, Hkv=2, N=64, Nk=64, d=16)
    pattern = sf.local(1) | sf.global_blocks(1)
    qn, kn = (t.detach().double().norm(dim=-1).max().item() for t in (q, k))
    edge = torch.finfo(torch.float32).max / 4 / (qn * kn)
    assert edge > sf.attention.SCALE_CHECKED
    call = dict(block_size=32, causal=True, backend=backend)
    for scale in (edge * 1.1, -edge * 1.1, 3.5e38, -3.5e38):
        for softcap in (0.0, 30.0):
            with pytest.raises(ValueError, match="scale"):
                sparse_attention(q, k, v, pattern, scale=scale, softcap=softcap, **call)
    # under vmap the plain tensors' rows bound the scores
    f = lambda q, k, v: sparse_attention(q, k, v, pattern, scale=edge * 1.1, **call)  # noqa: E731
    with pytest.raises(ValueError, match="could overflow the scores"):
        torch.func.vmap(f)(*(t.detach().expand(2, *t.shape) for t in (q, k, v)))
    # the same inputs scaled down by 1e3 fit the same scale
    small = (q.detach() / 1e3).requires_grad_(True)
    out = sparse_attention(small, k, v, pattern, scale=edge * 1.1, **call)
    assert torch.isfinite(out).all()
    for scale in (edge / 1.1, -edge / 1.1):
        out, lse = sparse_attention(q, k, v, pattern, scale=scale, return_lse=True, **call)
        grads = torch.autograd.grad(out, (q, k, v), do)
        for t in (out, lse, *grads):
            assert torch.isfinite(t).all(), scale


@pytest.mark.parametrize("backend", BACKENDS)
def test_alibi_slopes_that_would_give_nan_are_refused(backend):
    """Slopes that are not finite, or whose bias |slope| x the longest query-key distance reaches
    a quarter of float32's maximum, are refused with a ValueError naming alibi_slopes (before
    stop 72: NaN out of a NaN slope in both backends, and out of slope 1e38 in the Triton
    kernels' causal form). Large finite slopes inside the bound run finite. The values are read
    once per tensor and version: a slope changed in place is read again."""
    q, k, v, do = inputs(B=1, H=2, Hkv=2, N=64, Nk=64, d=16)
    call = dict(block_size=32, causal=True, backend=backend)
    for bad in ([float("nan"), 0.5], [float("inf"), 0.5], [0.5, -float("inf")], [1e38, 0.5], [0.5, -1e37]):
        with pytest.raises(ValueError, match="alibi_slopes must be finite"):
            sparse_attention(q, k, v, sf.local(1), alibi_slopes=torch.tensor(bad), **call)
    for causal in (True, False):
        for good in ([1e30, 0.5], [-1e30, 1e3]):
            slopes = torch.tensor(good)
            out, lse = sparse_attention(q, k, v, sf.local(1), alibi_slopes=slopes, return_lse=True,
                                        **dict(call, causal=causal))
            grads = torch.autograd.grad(out, (q, k, v), do)
            for t in (out, lse, *grads):
                assert torch.isfinite(t).all(), (good, causal)
    slopes = torch.tensor([0.25, 0.5])
    sparse_attention(q, k, v, sf.local(1), alibi_slopes=slopes, **call)
    assert sf.attention._CHECKED_SLOPES.get(slopes) == (slopes._version, 0.5)
    # a longer call with the same tensor compares the kept |slope| with its span, no new read:
    # a kept value planted here (0.25) survives the call
    sf.attention._CHECKED_SLOPES[slopes] = (slopes._version, 0.25)
    long_q = torch.randn(1, 2, 96, 16)
    sparse_attention(long_q, long_q, long_q, sf.local(1), alibi_slopes=slopes, **call)
    assert sf.attention._CHECKED_SLOPES.get(slopes) == (slopes._version, 0.25)
    slopes[0] = float("nan")                     # in place: a new version, read again
    with pytest.raises(ValueError, match="alibi_slopes must be finite"):
        sparse_attention(q, k, v, sf.local(1), alibi_slopes=slopes, **call)
    # under vmap (slopes mapped with the batch) the plain tensor's values are read
    f = lambda q, k, v, s: sparse_attention(q, k, v, sf.local(1), alibi_slopes=s, **call)  # noqa: E731
    stacked = torch.tensor([[0.25, 0.5], [float("nan"), 0.5]])
    with pytest.raises(ValueError, match="alibi_slopes must be finite"):
        torch.func.vmap(f)(*(t.detach().expand(2, *t.shape) for t in (q, k, v)), stacked)


# ------------------------------------------------------------------ variants (A/B benchmarked)
# The dropout draws (sparseflash.philox: DROPOUT_BITS, DROPOUT_MAPPING, DROPOUT_ROUNDS) and the
# ALiBi/softcap formulations (kernels.launch: ALIBI_VARIANT, SOFTCAP_VARIANT) are selectable for
# benchmarking; each must give the oracle's result, and the kernels the host's mask.
DROPOUT_VARIANTS = [(16, "interleave", 10), (16, "mma", 10), (8, "mma", 10), (8, "mma", 7),
                    (16, "quad", 10), (16, "quad", 7), (8, "quad", 7)]


def set_dropout(monkeypatch, variant):
    from sparseflash import philox

    bits, mapping, rounds = variant
    monkeypatch.setattr(philox, "DROPOUT_BITS", bits)
    monkeypatch.setattr(philox, "DROPOUT_MAPPING", mapping)
    monkeypatch.setattr(philox, "DROPOUT_ROUNDS", rounds)


import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from sparseflash.kernels.tiles import _keep  # noqa: E402


@triton.jit
def _keep_kernel(Out, seed, offset, bh, start_m, q_row0, u0, threshold, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, VARIANT: tl.constexpr):
    keep = _keep(seed, offset, bh, start_m, q_row0, u0, threshold, BLOCK_M, BLOCK_N, VARIANT)
    offs = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    tl.store(Out + offs, keep.to(tl.int8))


@pytest.mark.skipif(DEVICE == "cpu" and __import__("os").environ.get("TRITON_INTERPRET") != "1",
                    reason="the Triton kernels need CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("variant", DROPOUT_VARIANTS)
@pytest.mark.parametrize("block_n", [8, 16, 32, 64, 128])
def test_kernel_mask_is_the_host_mask(variant, block_n, monkeypatch):
    """``_keep`` (fast path for tiles >= the mapping's chunk, element by element below) draws
    exactly ``philox.dropout_keep``'s bits, for every variant, tile width and tile offset, and
    for query positions that are not the tensor rows (the "quad" mapping groups by position)."""
    from sparseflash.kernels.launch import _dropout_code
    from sparseflash.philox import dropout_threshold

    set_dropout(monkeypatch, variant)
    kernel = _keep_kernel
    seed, offset, bh, start_m, p = 0x1234_5678_9ABC, 977, 5, 48, 0.3
    for u0, block_m, q_row0 in ((0, 16, 0), (3 * block_n, 16, 5), (1 << 20, 16, -37), (block_n, 8, 3)):
        out = torch.empty(block_m, block_n, dtype=torch.int8, device=DEVICE)
        kernel[(1,)](out, seed, offset, bh, start_m, q_row0, u0, dropout_threshold(p), BLOCK_M=block_m,
                     BLOCK_N=block_n, VARIANT=_dropout_code())
        pos = torch.arange(start_m, start_m + block_m)
        host = dropout_keep(seed, offset, torch.tensor(bh)[None, None], pos + q_row0,
                            torch.arange(u0, u0 + block_n), p, positions=pos)
        assert torch.equal(out.cpu().bool(), host.cpu()), (variant, block_n, u0, block_m, q_row0)


def test_quad_mapping_draws():
    """The "quad" mapping's bits by definition: query p + y + 8z (p % 16 in {0, 2, 4, 6}) against
    key k + 8x (k % 16 < 8) is half z of word 2y + x of the call with counter
    ((k // 16) * 8 + k % 8, tensor row of p, bh, offset); the groups follow positions, not rows;
    every element of a 16 x 16 block gets its own draw; bad ``positions`` are refused."""
    from sparseflash import philox

    seed, offset, bh = 0xABCDEF0123, 31, 3
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(philox, "DROPOUT_MAPPING", "quad")
        mp.setattr(philox, "DROPOUT_ROUNDS", 7)
        rows, cols = torch.arange(16, 48), torch.arange(32, 64)
        got = philox.dropout_draws(seed, offset, torch.tensor(bh), rows, cols)
        for r in (16, 17, 25, 30, 47):
            for u in (32, 40, 45, 63):
                p, y, z = r - r % 2 - 8 * ((r % 16) // 8), r % 2, (r % 16) // 8
                x = (u % 16) // 8
                words = philox.philox4x32(seed, torch.tensor((u // 16) * 8 + u % 8), torch.tensor(p),
                                          torch.tensor(bh), torch.tensor(offset), rounds=7)
                want = (int(words[2 * y + x]) >> (16 * z)) & 0xFFFF
                assert int(got[r - 16, u - 32]) == want, (r, u)
        block = got[:16, :16].reshape(-1)
        assert block.unique().numel() >= 250           # 256 draws, collisions of 16 bits rare
        # rows 3 apart from their positions: the tensor rows pick other calls than positions' own
        shifted = philox.dropout_draws(seed, offset, torch.tensor(bh), rows + 3, cols, positions=rows)
        assert not torch.equal(shifted, got)
        same = philox.dropout_draws(seed, offset, torch.tensor(bh), rows + 16, cols, positions=rows + 16)
        assert torch.equal(same, philox.dropout_draws(seed, offset, torch.tensor(bh), rows + 16, cols))
        with pytest.raises(ValueError, match="positions"):
            philox.dropout_draws(seed, offset, torch.tensor(bh), rows, cols, positions=rows[:3])
        # 8-bit draws: query p + y + 8z against key k + x + 8v (k % 16 in {0, 2, 4, 6}) is byte
        # v + 2z of word 2y + x of the call with counter ((k // 16) * 4 + (k % 16) // 2, ...)
        mp.setattr(philox, "DROPOUT_BITS", 8)
        got = philox.dropout_draws(seed, offset, torch.tensor(bh), rows, cols)
        for r in (16, 17, 25, 30, 47):
            for u in (32, 33, 40, 45, 63):
                p, y, z = r - r % 2 - 8 * ((r % 16) // 8), r % 2, (r % 16) // 8
                x, vv = u % 2, (u % 16) // 8
                words = philox.philox4x32(seed, torch.tensor((u // 16) * 4 + (u % 8) // 2),
                                          torch.tensor(p), torch.tensor(bh), torch.tensor(offset),
                                          rounds=7)
                want = (int(words[2 * y + x]) >> (8 * (vv + 2 * z))) & 0xFF
                assert int(got[r - 16, u - 32]) == want, (r, u)
        # a 16 x 16 block is 16 calls of 16 bytes: every (call, byte) once
        calls = set()
        for r in range(16, 32):
            for u in range(32, 48):
                p, y, z = r - r % 2 - 8 * ((r % 16) // 8), r % 2, (r % 16) // 8
                x, vv = u % 2, (u % 16) // 8
                calls.add(((u // 16) * 4 + (u % 8) // 2, p, 2 * y + x, vv + 2 * z))
        assert len(calls) == 256
        mp.setattr(philox, "DROPOUT_MAPPING", "interleave")
        with pytest.raises(ValueError, match="DROPOUT_MAPPING"):
            philox.dropout_variant()
        mp.setattr(philox, "DROPOUT_MAPPING", "auto")
        assert philox.dropout_variant()[1] == philox.MAPPINGS.index("quad")


@pytest.mark.parametrize("bits", [16, 8])
@pytest.mark.parametrize("backend", BACKENDS)
def test_quad_dropout_with_offset_positions_and_documents(backend, bits, monkeypatch):
    """The "quad" mapping where query positions are not tensor rows: queries aligned bottom-right
    (kv_len > seq_len, positions 60 + i) and packed documents of odd lengths (each document's
    positions restart at 0 mid-tile); both backends drop the host mask's entries and match the
    float64 oracle; 16- and 8-bit draws."""
    set_dropout(monkeypatch, (bits, "quad", 10))
    from sparseflash.attention import _rng_ints
    from sparseflash.philox import draw_seed
    p = 0.25
    # bottom-right aligned queries
    q, k, v, do = inputs(B=2, H=2, Hkv=1, N=100, Nk=160, d=16)
    pattern = sf.local(2) | sf.global_blocks(1)
    torch.manual_seed(9)
    out, lse = sparse_attention(q, k, v, pattern, block_size=32, causal=True, dropout_p=p,
                                return_lse=True, backend=backend)
    grads = torch.autograd.grad(out, (q, k, v), do)
    torch.manual_seed(9)
    seed, offset = _rng_ints(draw_seed())
    bh = (torch.arange(2)[:, None] * 2 + torch.arange(2)[None, :])[:, :, None, None]
    qpos, kpos = positions(100, 160)
    keep = dropout_keep(seed, offset, bh, torch.arange(100), kpos, p, positions=qpos)
    assert not torch.equal(keep, dropout_keep(seed, offset, bh, torch.arange(100), kpos, p))
    layout = sf.compile(pattern, 100, kv_len=160, block_size=32, causal=True, num_heads=2)
    ref, ref_lse, ref_grads = oracle(q, k, v, do, layout, keep=keep, dropout_p=p)
    assert (out.double() - ref).abs().max() < 3e-5
    for g, r in zip(grads, ref_grads):
        assert (g.double() - r).abs().max() < 8e-5
    # packed documents: lengths 37, 1, 50 (tensor rows 0, 37, 38 start positions 0)
    lens = [37, 1, 50]
    cu = torch.tensor([0, 37, 38, 88], dtype=torch.int32)
    q, k, v, do = inputs(B=1, H=2, Hkv=2, N=88, Nk=88, d=16)
    torch.manual_seed(4)
    out = sparse_attention(q, k, v, sf.dense(), block_size=16, causal=True, dropout_p=p,
                           cu_seqlens=cu, backend=backend)
    grads = torch.autograd.grad(out, (q, k, v), do)
    torch.manual_seed(4)
    seed, offset = _rng_ints(draw_seed())
    start = 0
    for n in lens:
        sl = slice(start, start + n)
        bh1 = torch.arange(2)[None, :, None, None]
        keep = dropout_keep(seed, offset, bh1, torch.arange(start, start + n), torch.arange(n), p,
                            positions=torch.arange(n))
        layout = sf.compile(sf.dense(), n, block_size=16, causal=True, num_heads=2)
        qs, ks, vs, dos = (t.detach()[:, :, sl] for t in (q, k, v, do))
        ref, _, ref_grads = oracle(qs, ks, vs, dos, layout, keep=keep, dropout_p=p)
        assert (out[:, :, sl].double() - ref).abs().max() < 3e-5, n
        for g, r in zip(grads, ref_grads):
            assert (g[:, :, sl].double() - r).abs().max() < 8e-5, n
        start += n


def test_dropout_quantisation():
    from sparseflash.philox import dropout_scale, dropout_threshold

    assert dropout_threshold(0.1, 8) == 26 and dropout_scale(0.1, 8) == 256 / 230     # keep 230/256
    assert dropout_threshold(0.1, 16) == 6554 and dropout_scale(0.1, 16) == 65536 / (65536 - 6554)
    assert dropout_threshold(0.999, 8) == 255          # never drop everything
    assert dropout_threshold(0.001, 8) == 0 and dropout_scale(0.001, 8) == 1.0   # below 1/512: off


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", DROPOUT_VARIANTS)
def test_dropout_variants_against_float64(variant, backend, monkeypatch):
    """Forward and gradients equal the oracle with the host mask, tiles of 64 (the 8-bit fast
    path under the interpreter too), softcap and ALiBi on as well."""
    set_dropout(monkeypatch, variant)
    p = 0.2
    q, k, v, do = inputs(B=1, H=2, Hkv=1, N=128, Nk=128, d=16)
    pattern = sf.local(1) | sf.global_blocks(1)
    kw = dict(softcap=2.0, alibi_slopes=torch.tensor([0.25, 0.0625]))
    torch.manual_seed(5)
    out, lse = sparse_attention(q, k, v, pattern, block_size=64, causal=True, dropout_p=p,
                                return_lse=True, backend=backend, **kw)
    grads = torch.autograd.grad(out, (q, k, v), do)
    torch.manual_seed(5)
    from sparseflash.attention import _rng_ints
    from sparseflash.philox import draw_seed
    seed, offset = _rng_ints(draw_seed())
    H, N = q.shape[1:3]
    bh = torch.arange(H)[None, :, None, None]
    keep = dropout_keep(seed, offset, bh, torch.arange(N), torch.arange(N), p)
    assert 0.7 < keep.float().mean() < 0.9
    layout = sf.compile(pattern, N, block_size=64, causal=True, num_heads=H)
    ref, ref_lse, ref_grads = oracle(q, k, v, do, layout, keep=keep, dropout_p=p, **kw)
    assert (out.double() - ref).abs().max() < 3e-5
    assert (lse.double() - ref_lse).abs().max() < 2e-5
    for g, r in zip(grads, ref_grads):
        assert (g.double() - r).abs().max() < 8e-5


@pytest.mark.parametrize("variant", DROPOUT_VARIANTS[1:])
def test_dropout_variants_same_in_both_backends(variant, monkeypatch):
    set_dropout(monkeypatch, variant)
    q, k, v, do = inputs(B=1, H=2, Hkv=2, N=128, Nk=128, d=16)
    res = {}
    for backend in BACKENDS:
        torch.manual_seed(3)
        out = sparse_attention(q, k, v, sf.dense(), block_size=64, causal=True, dropout_p=0.1,
                               backend=backend)
        res[backend] = (out, *torch.autograd.grad(out, (q, k, v), do))
    for a, b in zip(res["torch"], res["triton"]):
        assert (a - b).abs().max() < 3e-5


@pytest.mark.parametrize("variant", [(8, "mma", 10), (8, "mma", 7)])
def test_dropout_8bit_seeds_and_unbiased_mean(variant, monkeypatch):
    set_dropout(monkeypatch, variant)
    test_dropout_seeds_and_unbiased_mean()
    # p = 0.1 is 26/256: kept entries scaled by 256/230, unbiased for that keep probability
    q, k, v, _ = inputs(B=1, H=2, Hkv=2, N=64, Nk=64, d=16)
    q, k, v = (t.detach() for t in (q, k, v))
    plain = sparse_attention(q, k, v, sf.dense(), block_size=32, backend="torch")
    torch.manual_seed(0)
    mean = torch.stack([sparse_attention(q, k, v, sf.dense(), block_size=32, dropout_p=0.1,
                                         backend="torch") for _ in range(300)]).mean(0)
    spread = (plain.abs().mean().item() + 1.0) * math.sqrt(0.11 / 64) / math.sqrt(300)
    assert (mean - plain).abs().mean().item() < 3 * spread


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("alibi_variant,softcap_variant", [("abs", "plain"), ("column", "folded")])
@pytest.mark.parametrize("case", ["causal-far", "causal-both", "noncausal-alibi", "causal-softcap"])
def test_alibi_softcap_variants_against_float64(case, alibi_variant, softcap_variant, backend, monkeypatch):
    """Each formulation against the float64 oracle, forward, LSE and gradients. causal-far: 64
    queries at positions 8128.. of a 8192-key frame (the causal ALiBi keeps its terms relative
    to the tile, so large positions lose no precision); noncausal falls back to |t - u|."""
    from sparseflash.kernels import launch

    monkeypatch.setattr(launch, "ALIBI_VARIANT", alibi_variant)
    monkeypatch.setattr(launch, "SOFTCAP_VARIANT", softcap_variant)
    N, Nk, causal, kw = 64, 64, True, {}
    pattern = sf.local(1) | sf.global_blocks(1)
    if case == "causal-far":
        N, Nk = 64, 8192
        kw["alibi_slopes"] = torch.tensor([2.0 ** -8, 2.0 ** -4])
    if case == "causal-both":
        kw = dict(softcap=0.5, alibi_slopes=torch.tensor([0.5, 0.125]))
    if case == "noncausal-alibi":
        causal, kw = False, dict(alibi_slopes=torch.tensor([0.5, 0.125]))
    if case == "causal-softcap":
        kw = dict(softcap=0.5)
    q, k, v, do = inputs(B=1, H=2, Hkv=2, N=N, Nk=Nk, d=16)
    out, lse = sparse_attention(q, k, v, pattern, block_size=32, causal=causal, return_lse=True,
                                backend=backend, **kw)
    grads = torch.autograd.grad(out, (q, k, v), do)
    layout = sf.compile(pattern, N, kv_len=Nk, block_size=32, causal=causal, num_heads=2)
    ref, ref_lse, ref_grads = oracle(q, k, v, do, layout, **kw)
    for t in (out, lse, *grads):
        assert not torch.isnan(t).any()
    assert (out.double() - ref).abs().max() < 2e-5
    finite = ~torch.isinf(ref_lse)
    assert (lse.double() - ref_lse)[finite].abs().max() < 2e-5
    for g, r in zip(grads, ref_grads):
        assert (g.double() - r).abs().max() < 5e-5


def test_parity_benchmark_times_its_impls_interleaved(monkeypatch):
    """benchmarks/parity.py ``time_jobs``: every impl timed in every round, the order reversed
    every other round, each time the mean of its rounds, the settings held around each impl's
    timed calls; a timer whose readings grow with time (a GPU slowing as it warms) then gives
    every impl of equal cost the same mean over a forward and a reversed round."""
    import contextlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import parity, real_batches as rb

    clock = [0.0]
    calls = []

    def drifting_timer(fn):
        fn()
        clock[0] += 1.0
        return clock[0], 1             # each timing reads 1 ms more than the one before

    held = []

    @contextlib.contextmanager
    def setup(name):
        held.append(name)
        yield

    def job(name):
        def fn(q, k, v):
            calls.append((name, held[-1]))
            return q * k * v
        return fn

    monkeypatch.setattr(rb, "peak", lambda fn, dev: 0.0)
    monkeypatch.setattr(rb, "ROWS", [])
    monkeypatch.setattr(parity, "ROUNDS", 2)
    monkeypatch.setattr(parity, "HEAT_S", 0.0)
    x = torch.randn(1, 1, 4, 2, requires_grad=False)
    names = ["base", "a", "b"]
    jobs = [(n, job(n), lambda n=n: setup(n)) for n in names]
    ms = parity.time_jobs(drifting_timer, "cpu", "case", jobs, x, x, x, x, 1.0, 1.0, suite="t")
    # round 1: base, a, b (fwd then fwd+bwd each: readings 1..6); round 2 reversed: b, a, base (7..12)
    assert ms == {"base": ((1 + 11) / 2, (2 + 12) / 2), "a": ((3 + 9) / 2, (4 + 10) / 2),
                  "b": ((5 + 7) / 2, (6 + 8) / 2)}
    assert all(name == setting for name, setting in calls), "a job ran outside its settings"
    assert [r["impl"] for r in rb.ROWS] == ["base", "base", "a", "a", "b", "b"]
    assert "mean of 2 interleaved rounds: 1.0000, 11.0000" in rb.ROWS[0]["note"]


@pytest.mark.parametrize("pattern", [sf.local(1), sf.local(2) | sf.global_blocks(1)], ids=str)
def test_torch_backend_work_grows_with_computed_blocks(pattern):
    """The torch backend's matrix products, counted by torch's FLOP counter, are exactly those of
    the stored blocks' token pairs: 2 products of 2 d FLOPs a pair forward, 5 backward (one walk:
    S and dP recomputed once, then dQ, dK, dV), never N x N; so doubling N doubles them for a
    local pattern."""
    from torch.utils.flop_counter import FlopCounterMode

    H, d, bs = 2, 16, 64

    def counts(N):
        q, k, v = (torch.randn(1, H, N, d, requires_grad=True) for _ in range(3))
        layout = sf.compile(pattern, N, block_size=bs, causal=True, num_heads=H)
        pairs = layout.nnz * bs * bs                  # every head's stored blocks (N multiple of bs)
        with FlopCounterMode(display=False) as fwd:
            out = sparse_attention(q, k, v, layout, backend="torch")
        with FlopCounterMode(display=False) as bwd:
            out.backward(torch.randn_like(out))
        per_pair = 2 * d
        assert fwd.get_total_flops() == 2 * per_pair * pairs
        assert bwd.get_total_flops() == 5 * per_pair * pairs
        return fwd.get_total_flops(), bwd.get_total_flops(), pairs

    f1, b1, p1 = counts(4096)
    f2, b2, p2 = counts(8192)
    # local bands and one global column: pairs grow linearly (the global column's pairs too)
    assert p2 < 2.1 * p1 and f2 < 2.1 * f1 and b2 < 2.1 * b1
    assert p1 < 0.1 * H * 4096 * 4096   # far from the N x N products
