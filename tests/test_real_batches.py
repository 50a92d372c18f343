"""Real batches: absolute positions (decode, chunked prefill), packed documents, key padding
and token windows, in both backends, against a float64 oracle built from the Pattern itself
(not from the compiled tables), forward and all gradients.

The oracle writes out the rule of BlockLayout's docstring: per sequence, query i sits at
position ``q_pos + i`` and key j at ``k_pos + j`` (bottom-right aligned), the pattern is
evaluated on the square grid of absolute blocks, and the causal, window and padding tests
apply token by token; tokens of different documents never attend each other.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash.attention import sparse_attention
from sparseflash.reference import reference_attention

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ["torch", "triton"]


# ---------------------------------------------------------------------- the oracle
def oracle_mask(pattern, heads, q_lens, k_lens, bs, causal, window=None, kpm=None, batch=1):
    """Bool ``[batch, heads, sum(q_lens), sum(k_lens)]`` (one sequence per document)."""
    Nq, Nk = sum(q_lens), sum(k_lens)
    mask = np.zeros((heads, Nq, Nk), bool)
    qs = ks = 0
    for ql, kl in zip(q_lens, k_lens):
        if ql and kl:
            frame = max(ql, kl)
            n = math.ceil(frame / bs)
            blocks = pattern.to_dense(n, n, heads)                      # absolute grid
            t = frame - ql + np.arange(ql)                              # positions
            u = frame - kl + np.arange(kl)
            m = blocks[:, t // bs][:, :, u // bs]
            if causal:
                m = m & (u[None, :] <= t[:, None])
            if window is not None:
                if window[0] >= 0:
                    m = m & (u[None, :] >= t[:, None] - window[0])
                if window[1] >= 0:
                    m = m & (u[None, :] <= t[:, None] + window[1])
            mask[:, qs:qs + ql, ks:ks + kl] = m
        qs, ks = qs + ql, ks + kl
    mask = np.broadcast_to(mask[None], (batch, heads, Nq, Nk)).copy()
    if kpm is not None:
        mask &= kpm.cpu().numpy()[:, None, None, :]
    return torch.from_numpy(mask)


def rnd(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(DEVICE, dtype)


def eager_error(q, k, v, mask, scale, do, ref, ref_grads):
    """Errors of a same-dtype eager implementation (the yardstick), output and grads."""
    qe, ke, ve = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    H, Hkv = q.shape[1], k.shape[1]
    s = (qe @ ke.repeat_interleave(H // Hkv, 1).transpose(-1, -2)) * scale
    s = s.float().masked_fill(~mask.to(q.device), float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0).to(q.dtype)
    out = p @ ve.repeat_interleave(H // Hkv, 1)
    grads = torch.autograd.grad(out, (qe, ke, ve), do)
    return [(out.double() - ref).abs().max().item()] + [
        (g.double() - r).abs().max().item() for g, r in zip(grads, ref_grads)]


def check(pattern, *, B=1, H=2, Hkv=1, q_lens, k_lens=None, d=32, bs=32, causal=False,
          window=None, kpm=None, packed=False, dtype=torch.float32, backend="triton", seed=0):
    """sparse_attention against the oracle: out, lse and dq, dk, dv, within 3x a same-dtype
    eager implementation's error (plus a tiny floor); no NaN anywhere."""
    k_lens = k_lens or q_lens
    Nq, Nk = sum(q_lens), sum(k_lens)
    q = rnd((B, H, Nq, d), dtype, seed).requires_grad_(True)
    k = rnd((B, Hkv, Nk, d), dtype, seed + 1).requires_grad_(True)
    v = rnd((B, Hkv, Nk, d), dtype, seed + 2).requires_grad_(True)
    do = rnd((B, H, Nq, d), dtype, seed + 3)
    kw = {}
    if packed:
        kw["cu_seqlens"] = torch.tensor(np.cumsum([0] + list(q_lens)), dtype=torch.int32)
        if k_lens != q_lens:
            kw["cu_seqlens_k"] = torch.tensor(np.cumsum([0] + list(k_lens)), dtype=torch.int32, device=DEVICE)
    out, lse = sparse_attention(q, k, v, pattern, block_size=bs, causal=causal, window_size=window,
                                key_padding_mask=kpm, return_lse=True, backend=backend, **kw)
    grads = torch.autograd.grad(out, (q, k, v), do)
    mask = oracle_mask(pattern, H, q_lens if packed else [Nq], k_lens if packed else [Nk], bs,
                       causal, window, kpm, B)
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref, ref_lse = reference_attention(q64, k64, v64, scale=1 / math.sqrt(d), mask=mask)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
    for t in (out, lse.nan_to_num(neginf=0.0), *grads):
        assert not torch.isnan(t).any()
    assert torch.equal(torch.isinf(lse).cpu(), torch.isinf(ref_lse).cpu()), "rows that see nothing"
    yard = eager_error(q, k, v, mask, 1 / math.sqrt(d), do, ref, ref_grads)
    floor = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]
    got = [(out.double() - ref).abs().max().item()] + [
        (g.double() - r).abs().max().item() for g, r in zip(grads, ref_grads)]
    for name, e, y in zip(("out", "dq", "dk", "dv"), got, yard):
        assert e <= 3 * y + floor, f"{name}: error {e:.2e} vs eager {y:.2e}"
    finite = ~torch.isinf(ref_lse)
    assert (lse.double() - ref_lse)[finite].abs().max().item() <= 1e-4 if finite.any() else True
    return out, lse


# ---------------------------------------------------------------------- absolute positions
CHUNK_PATTERNS = [
    ("local-global", sf.local(2) | sf.global_blocks(1)),
    ("bigbird", sf.bigbird(window=1, globals=1, random=2)),
    ("random", sf.random(2, seed=3)),
    ("butterfly", sf.butterfly()),
    ("columns-last", sf.columns([-1]) | sf.local(0)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,pattern", CHUNK_PATTERNS, ids=[c[0] for c in CHUNK_PATTERNS])
def test_last_queries_equal_the_full_calls_rows(name, pattern, backend):
    """Decode (c = 1), chunked prefill with edges off block boundaries, and a chunk in the
    middle against the keys up to its end: exactly the rows and LSE of the full call over the
    same keys. (Random draws depend on the grid, so a grid-dependent pattern's middle chunk
    matches the call that ends where it ends; passing the whole sequence's layout instead
    gives the whole sequence's rows: test_whole_sequence_layout_serves_shorter_calls.)"""
    N, H, d, bs = 300, 2, 32, 32
    q, k, v = rnd((2, H, N, d), torch.float32, 1), rnd((2, 1, N, d), torch.float32, 2), rnd((2, 1, N, d), torch.float32, 3)
    for start, end in ((299, 300), (250, 300), (13, 300), (100, 171), (140, 141), (0, 37)):
        full, full_lse = sparse_attention(q[:, :, :end], k[:, :, :end], v[:, :, :end], pattern, block_size=bs,
                                          causal=True, return_lse=True, backend=backend)
        out, lse = sparse_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], pattern, block_size=bs,
                                    causal=True, return_lse=True, backend=backend)
        torch.testing.assert_close(out, full[:, :, start:end], atol=2e-6, rtol=0)
        torch.testing.assert_close(lse, full_lse[:, :, start:end], atol=2e-6, rtol=0)


def test_decode_sees_its_own_neighbourhood():
    """The issue's reproducer: local(2) against 1,000 cached keys attends positions 640-999
    (block 128), and a global row does not capture the decode query."""
    layout = sf.compile(sf.local(2), 1, kv_len=1000, block_size=128)
    seen = np.flatnonzero(layout.to_token_mask()[0])
    assert (seen.min(), seen.max(), seen.size) == (640, 999, 360)
    layout = sf.compile(sf.local(2) | sf.global_blocks(1), 1, kv_len=1000, block_size=128, causal=True)
    seen = np.flatnonzero(layout.to_token_mask()[0])
    assert seen.size == 128 + 360 and seen.max() == 999


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_attention_rule(backend):
    """kv_len < seq_len, non-causal: key row j sits at position j + seq_len - kv_len."""
    check(sf.local(1), q_lens=[130], k_lens=[70], backend=backend)
    check(sf.local(1) | sf.global_blocks(1), H=2, Hkv=2, q_lens=[40], k_lens=[170], backend=backend)


# ---------------------------------------------------------------------- packed documents
DOC_CASES = [
    # id, pattern, q doc lengths, k doc lengths (None: same), H, Hkv, d, causal, window
    ("docs-causal-GQA", sf.local(1) | sf.global_blocks(1), [300, 500, 224], None, 4, 2, 32, True, None),
    ("docs-one-token", sf.local(0), [1, 64, 33, 1, 30], None, 2, 1, 32, True, None),
    ("docs-d80-window", sf.dense(), [90, 37], None, 2, 2, 80, True, (20, 0)),
    ("docs-perhead", sf.per_head(sf.local(1), sf.strided(2)), [70, 100], None, 2, 1, 32, False, None),
    ("docs-cross-k", sf.local(1), [40, 60], [100, 20], 2, 1, 32, False, None),
    ("docs-empty-doc", sf.local(1), [50, 0, 30], [50, 0, 30], 2, 1, 32, True, None),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", DOC_CASES, ids=[c[0] for c in DOC_CASES])
def test_packed_documents(case, backend):
    _, pattern, ql, kl, H, Hkv, d, causal, window = case
    check(pattern, H=H, Hkv=Hkv, q_lens=ql, k_lens=kl, d=d, causal=causal, window=window,
          packed=True, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_documents_with_padding(backend):
    kpm = torch.ones(1, 160, dtype=torch.bool, device=DEVICE)
    kpm[0, 95:100] = False            # padding inside the first document, across a block edge
    kpm[0, 150:] = False              # the tail of the second
    check(sf.local(1), H=2, Hkv=1, q_lens=[100, 60], causal=True, kpm=kpm, packed=True, backend=backend)


def test_documents_do_not_see_each_other():
    """Two documents, values of the second all 100: the first's outputs never see them."""
    q = torch.randn(1, 1, 96, 16, device=DEVICE)
    k = torch.randn(1, 1, 96, 16, device=DEVICE)
    v = torch.randn(1, 1, 96, 16, device=DEVICE)
    v[:, :, 50:] = 100.0
    out = sparse_attention(q, k, v, sf.dense(), block_size=32, backend="torch",
                           cu_seqlens=torch.tensor([0, 50, 96], dtype=torch.int32))
    assert out[:, :, :50].abs().max() < 10 and torch.allclose(out[:, :, 50:], torch.full_like(out[:, :, 50:], 100.0))


# ---------------------------------------------------------------------- padding
@pytest.mark.parametrize("backend", BACKENDS)
def test_key_padding_left_right_and_empty(backend):
    kpm = torch.ones(3, 150, dtype=torch.bool, device=DEVICE)
    kpm[0, :45] = False               # left padding, crossing a block edge
    kpm[1, 100:] = False              # right padding
    kpm[2, :] = False                 # nothing to see: out 0, lse -inf, zero gradients
    out, lse = check(sf.local(1) | sf.global_blocks(1), B=3, H=2, Hkv=1, q_lens=[150], causal=True,
                     kpm=kpm, backend=backend)
    assert (out[2] == 0).all() and torch.isinf(lse[2]).all()
    check(sf.local(2), B=3, H=2, Hkv=2, q_lens=[150], d=80, kpm=kpm, backend=backend)


def test_padding_skips_blocks_with_no_valid_key():
    from sparseflash.attention import resolve_layout

    kpm = np.ones((2, 256), bool)
    kpm[0, :128] = False              # two whole blocks of 64 padded: never visited
    kpm[1, 60:70] = False             # partly padded blocks become partial
    layout = resolve_layout(sf.dense(), seq_len=256, kv_len=256, num_heads=1, block_size=64,
                            causal=False, key_padding_mask=kpm, batch=2)
    assert layout.num_seqs == 2
    assert not layout.to_dense(seq=0)[0][:, :2].any() and layout.to_dense(seq=0)[0][:, 2:].all()
    assert layout.to_dense("partial", seq=1)[0][:, 0].all() and layout.to_dense("partial", seq=1)[0][:, 1].all()
    assert layout.to_dense("full", seq=1)[0][:, 2:].all()


def test_key_padding_keeps_a_layouts_own_positions():
    # with_key_padding works on any one-sequence layout: here queries mid-way through their
    # keys (q_pos 64 of 192 keys, as a context-parallel rank's buffer puts them), not
    # bottom-right. Each element's tables are the base's blocks that hold a valid key, full
    # only where the base block was full and every key is valid, at the base's positions.
    from sparseflash.compiler import _layout_of, absolute_blocks, with_key_padding

    base = sf.compile(sf.bigbird(window=1, globals=1, random=1), 256, block_size=32, causal=True, num_heads=2)
    head, I, J = absolute_blocks(base)
    keep = (I >= 2) & (I < 4)                      # query blocks 2, 3 only, against keys 0..5
    keep &= J < 6
    mid = _layout_of(None if head is None else head[keep], I[keep], J[keep], base.table_heads, 64, 192,
                     64, 0, 32, True, 2, None, 0.0)
    rng = np.random.default_rng(5)
    kpm = rng.random((3, 192)) > 0.4
    kpm[1] = False
    kpm[2, 32:64] = False
    padded = with_key_padding(mid, kpm)
    assert padded.num_seqs == 3 and (padded.seqs[:, 4] == 64).all()       # q_pos kept
    bs, nk = 32, 6
    status = kpm.reshape(3, nk, bs).sum(2)
    for b in range(3):
        for h in range(2):
            dense, full = mid.to_dense()[h], mid.to_dense("full")[h]
            want = dense & (status[b] > 0)[None, :]
            assert np.array_equal(padded.to_dense(seq=b)[h], want), (b, h)
            assert np.array_equal(padded.to_dense("full", seq=b)[h], full & (status[b] == bs)[None, :])
            assert np.array_equal(padded.to_token_mask(h, seq=b), mid.to_token_mask(h) & kpm[b][None, :])
    assert not padded.to_dense(seq=1).any()
    with pytest.raises(ValueError, match="key_padding_mask must be a bool array of shape"):
        with_key_padding(mid, kpm[:, :100])
    with pytest.raises(ValueError, match="only a layout of one sequence"):
        with_key_padding(padded, kpm)


# ---------------------------------------------------------------------- windows
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window,causal", [((40, 0), True), ((17, 25), False), ((-1, 10), False), ((50, -1), True)])
def test_token_windows(window, causal, backend):
    check(sf.dense(), H=2, Hkv=1, q_lens=[200], causal=causal, window=window, backend=backend)
    check(sf.local(2) | sf.global_blocks(1), H=2, Hkv=1, q_lens=[70], k_lens=[200], causal=causal,
          window=window, backend=backend)


def test_window_never_visits_blocks_outside_it():
    layout = sf.compile(sf.dense(), 64 * 1024, block_size=128, causal=True, window_size=(4096, 0))
    assert layout.max_row_blocks == 33 and layout.nnz < 512 * 34


# ---------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision(dtype, backend):
    kpm = torch.ones(1, 180, dtype=torch.bool, device=DEVICE)
    kpm[0, 70:75] = False
    check(sf.local(1) | sf.global_blocks(1), H=4, Hkv=2, q_lens=[100, 80], d=80, causal=True,
          window=(60, 0), kpm=kpm, packed=True, dtype=dtype, backend=backend)


# ---------------------------------------------------------------------- decode path
@pytest.mark.parametrize("pattern", [sf.local(2) | sf.global_blocks(1), sf.bigbird(1, 1, 2),
                                     sf.per_head(sf.local(1), sf.strided(3), sf.dense(), sf.local(0))],
                         ids=["local-global", "bigbird", "perhead"])
def test_decode_kernel_matches_torch_backend(pattern):
    """The split-KV decode kernel (one query block, GQA packed, padding, window) against the
    torch backend on the same call, over many cache lengths of one decode loop."""
    B, H, Hkv, d, bs, L = 2, 4, 2, 32, 32, 260
    q, k, v = rnd((B, H, L, d), torch.float32, 5), rnd((B, Hkv, L, d), torch.float32, 6), rnd((B, Hkv, L, d), torch.float32, 7)
    kpm = torch.ones(B, L, dtype=torch.bool, device=DEVICE)
    kpm[1, :33] = False
    for window in (None, (70, 0)):
        for n in (1, 31, 32, 33, 100, 255, 256, 257, 260):
            for c in (1, 3):
                if c > n:
                    continue
                args = (q[:, :, n - c:n], k[:, :, :n], v[:, :, :n], pattern)
                kw = dict(block_size=bs, causal=True, key_padding_mask=kpm[:, :n], window_size=window, return_lse=True)
                out, lse = sparse_attention(*args, backend="triton", **kw)
                ref, ref_lse = sparse_attention(*args, backend="torch", **kw)
                torch.testing.assert_close(out, ref, atol=3e-6, rtol=0)
                torch.testing.assert_close(lse, ref_lse, atol=3e-6, rtol=0)


def test_decode_loop_compiles_nothing_per_step():
    """A 200-step decode loop with a prefix-stable pattern compiles one layout per power of
    two of the cache's blocks, not one per step; a layout compiled for the whole sequence is
    reused for every step."""
    from sparseflash.attention import _decode_step, _checked_call

    pattern = sf.local(3) | sf.global_blocks(1)
    layouts = set()
    for n in range(1, 2000, 10):
        q = torch.zeros(1, 2, 1, 16)
        k = torch.zeros(1, 1, n, 16)
        call = _checked_call(q, k, k, pattern, 64, True, None, "torch", None, None, None, None)
        layout, row = _decode_step(call)
        layouts.add(id(layout))
        assert row == (n - 1) // 64
    assert len(layouts) == 6                       # capacities 64, 128, 256, 512, 1024, 2048
    whole = sf.compile(pattern, 4096, block_size=64, causal=True)
    for n in (1, 700, 4096):
        call = _checked_call(torch.zeros(1, 2, 1, 16), torch.zeros(1, 1, n, 16), torch.zeros(1, 1, n, 16),
                             whole, None, None, None, "torch", None, None, None, None)
        assert _decode_step(call) == (whole, (n - 1) // 64)
    # a grid-dependent pattern is compiled per cache length instead (documented)
    from sparseflash.compiler import prefix_stable
    assert prefix_stable(pattern) and not prefix_stable(sf.bigbird()) and not prefix_stable(sf.global_blocks([-1]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pattern", [sf.local(1) | sf.global_blocks(1), sf.bigbird(1, [0, -1], 2)], ids=["local", "bigbird"])
def test_whole_sequence_layout_serves_shorter_calls(backend, pattern):
    layout = sf.compile(pattern, 256, block_size=32, causal=True, num_heads=2)
    q, k, v = rnd((1, 2, 256, 32), torch.float32, 1), rnd((1, 2, 256, 32), torch.float32, 2), rnd((1, 2, 256, 32), torch.float32, 3)
    full = sparse_attention(q, k, v, layout, backend=backend)
    for start, end in ((255, 256), (100, 180), (0, 256)):
        part = sparse_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end], layout, backend=backend)
        torch.testing.assert_close(part, full[:, :, start:end], atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="seq_len <= kv_len"):
        sparse_attention(q, k[:, :, :100], v[:, :, :100], layout, backend=backend)


# ---------------------------------------------------------------------- settings and bad input
def test_layout_brings_its_settings():
    layout = sf.compile(sf.local(1), 128, block_size=32, causal=True, window_size=(40, 0))
    q = rnd((1, 1, 128, 16), torch.float32, 0)
    out = sparse_attention(q, q, q, layout, backend="torch")
    same = sparse_attention(q, q, q, layout, block_size=32, causal=True, window_size=(40, 0), backend="torch")
    assert torch.equal(out, same)
    with pytest.raises(ValueError, match="block_size=64 conflicts"):
        sparse_attention(q, q, q, layout, block_size=64)
    with pytest.raises(ValueError, match="causal=False conflicts"):
        sparse_attention(q, q, q, layout, causal=False)
    with pytest.raises(ValueError, match="window_size"):
        sparse_attention(q, q, q, layout, window_size=(10, 0))
    with pytest.raises(ValueError, match="causal must be a bool"):
        sparse_attention(q, q, q, sf.local(1), causal="no")


def test_bad_input_names_the_argument():
    q = torch.zeros(1, 2, 100, 16)
    k = torch.zeros(1, 2, 100, 16)
    cu = torch.tensor([0, 40, 100], dtype=torch.int32)
    for bad, msg in [(cu.float(), "cu_seqlens must be an integer"), (torch.tensor([0, 60, 40, 100], dtype=torch.int32), "non-decreasing"),
                     (torch.tensor([0, 40, 90], dtype=torch.int32), "end at the total"), (torch.tensor([5, 100], dtype=torch.int32), "start at 0"),
                     ([0, 100], "cu_seqlens must be an int32 torch.Tensor")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            sparse_attention(q, k, k, sf.local(1), block_size=32, cu_seqlens=bad)
    with pytest.raises(ValueError, match="batch 1"):
        sparse_attention(q.expand(2, -1, -1, -1), k.expand(2, -1, -1, -1), k.expand(2, -1, -1, -1), sf.local(1),
                         block_size=32, cu_seqlens=cu)
    with pytest.raises(ValueError, match="cu_seqlens_k must end"):
        sparse_attention(q, k, k, sf.local(1), block_size=32, cu_seqlens=cu, cu_seqlens_k=torch.tensor([0, 1, 2], dtype=torch.int32))
    for bad in (torch.ones(1, 99, dtype=torch.bool), torch.ones(2, 100, dtype=torch.bool), torch.ones(1, 100)):
        with pytest.raises(ValueError, match=r"key_padding_mask must be a bool tensor of shape \(batch, kv_len\)"):
            sparse_attention(q, k, k, sf.local(1), block_size=32, key_padding_mask=bad)
    for bad in ((-2, 0), (0, -5), (1,), "4", (1.5, 0)):
        with pytest.raises(ValueError, match="window_size"):
            sparse_attention(q, k, k, sf.local(1), block_size=32, window_size=bad)


def test_estimator_dense_reference_matches_a_compiled_dense_layout():
    from sparseflash.estimate import _causal_dense_nnz

    for N, Nk, causal, window in [(300, 300, True, None), (1, 1000, True, None), (130, 700, True, (100, 0)),
                                  (700, 130, False, (50, 60)), (512, 512, False, (-1, 64)), (200, 900, False, None)]:
        layout = sf.compile(sf.local(1), N, kv_len=Nk, block_size=64, causal=causal, window_size=window, num_heads=3)
        dense = sf.compile(sf.dense(), N, kv_len=Nk, block_size=64, causal=causal, window_size=window, num_heads=3)
        assert _causal_dense_nnz(layout) == dense.nnz
