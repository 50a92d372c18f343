"""Device-built layouts: layout_from_block_mask and topk_layout build the tables of
BlockLayout's docstring with tensor ops on their input's device.

The builders are checked against the host compiler (the same tables, full/partial split and
order included) and against an oracle that writes the geometry out token by token; attention
over them against the float64 oracle in both backends, forward and gradients.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash.attention import sparse_attention
from sparseflash.reference import reference_attention
from test_parity import positions

pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ["torch", "triton"]
TABLES = ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull")


def rnd(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(DEVICE, dtype)


def bits(shape, seed, p=0.4):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) < p).to(DEVICE)


# ---------------------------------------------------------------------- the oracles
def geometry_oracle(seq_len, kv_len, bs, causal):
    """(visible, full) bool ``[nq, nk]`` written out token by token: queries and keys end
    together on a grid of absolute blocks; a block is visible if one pair passes, full if
    every pair of its b x b rectangle is present and passes."""
    frame = max(seq_len, kv_len)
    q_pos, k_pos = frame - seq_len, frame - kv_len
    n = math.ceil(frame / bs)
    tok = np.zeros((n * bs, n * bs), bool)
    tok[q_pos:frame, k_pos:frame] = True
    if causal:
        tok &= np.tril(np.ones_like(tok))
    blocks = tok.reshape(n, bs, n, bs)
    i0, j0 = q_pos // bs, k_pos // bs
    return blocks.any((1, 3))[i0:, j0:], blocks.all((1, 3))[i0:, j0:]


def token_oracle(blocks, seq_len, kv_len, bs, causal):
    """Bool ``[S, H, seq_len, kv_len]`` from local block grids ``[S, H, nq, nk]``."""
    frame = max(seq_len, kv_len)
    t = frame - seq_len + np.arange(seq_len)
    u = frame - kv_len + np.arange(kv_len)
    i, j = t // bs - (frame - seq_len) // bs, u // bs - (frame - kv_len) // bs
    m = blocks[:, :, i][:, :, :, j]
    if causal:
        m = m & (u[None, :] <= t[:, None])
    return torch.from_numpy(np.ascontiguousarray(m))


def host_equivalent(blocks, seq_len, kv_len, bs, causal, heads):
    """The host compiler's layout of one block grid ``[H or 1, nq, nk]``."""
    pattern = sf.from_mask(blocks if blocks.shape[0] > 1 else blocks[0])
    return sf.compile(pattern, seq_len, kv_len=kv_len, block_size=bs, causal=causal, num_heads=heads)


def assert_tables_match_host(layout, blocks, seq_len, kv_len, bs, causal, heads):
    """Every batch table of ``layout`` (valid prefix) equals the host compiler's, CSR for CSR."""
    assert layout.on_device and layout.device.type == torch.device(DEVICE).type
    for name in TABLES:
        t = getattr(layout, name)
        assert t.dtype == torch.int32 and t.device.type == torch.device(DEVICE).type
    host = layout.host()
    for s in range(blocks.shape[0]):
        ref = host_equivalent(blocks[s], seq_len, kv_len, bs, causal, heads)
        assert layout.table_heads == ref.table_heads
        for kind in ("any", "full", "partial"):
            np.testing.assert_array_equal(layout.to_dense(kind, seq=s), ref.to_dense(kind))
        row_off, col_off = int(host.seqs[s, 6]), int(host.seqs[s, 7])
        for d, off, n in (("fwd", row_off, ref.fwd_nfull.size), ("bwd", col_off, ref.bwd_nfull.size)):
            ptr = getattr(host, f"{d}_ptr")[off:off + n + 1]
            np.testing.assert_array_equal(ptr - ptr[0], getattr(ref, f"{d}_ptr"))
            np.testing.assert_array_equal(getattr(host, f"{d}_idx")[ptr[0]:ptr[-1]], getattr(ref, f"{d}_idx"))
            np.testing.assert_array_equal(getattr(host, f"{d}_nfull")[off:off + n], getattr(ref, f"{d}_nfull"))
        np.testing.assert_array_equal(host.seqs[s, :6], ref.seqs[0, :6])
        np.testing.assert_array_equal(host.seqs[s, 8:], ref.seqs[0, 8:])


# ---------------------------------------------------------------------- layout_from_block_mask
GEOMETRIES = [  # seq_len, kv_len, block_size
    pytest.param(64, 64, 16, id="square"),
    pytest.param(50, 50, 16, id="ragged-end"),
    pytest.param(40, 100, 32, id="kv-longer-unaligned"),
    pytest.param(100, 40, 16, id="cross-kv-shorter"),
    pytest.param(17, 128, 32, id="chunk"),
]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("seq_len,kv_len,bs", GEOMETRIES)
def test_block_mask_tables_equal_the_host_compilers(seq_len, kv_len, bs, causal):
    geo = sf.compile(sf.dense(), seq_len, kv_len=kv_len, block_size=bs)
    nq, nk = geo.num_q_blocks, geo.num_kv_blocks
    mask = bits((3, 2, nq, nk), seed=nq * 7 + nk)
    mask[1, 0, 0] = False                       # an empty row
    mask[2] = False                             # a batch element with no block at all
    layout = sf.layout_from_block_mask(mask, seq_len=seq_len, kv_len=kv_len, block_size=bs,
                                       causal=causal)
    assert layout.num_seqs == 3 and layout.num_heads == 2 and layout.shape == (2, nq, nk)
    blocks = mask.cpu().numpy()
    assert_tables_match_host(layout, blocks, seq_len, kv_len, bs, causal, 2)
    # and the oracle: the mask's visible blocks; full exactly where the geometry is
    visible, full = geometry_oracle(seq_len, kv_len, bs, causal)
    for s in range(3):
        np.testing.assert_array_equal(layout.to_dense(seq=s), blocks[s] & visible)
        np.testing.assert_array_equal(layout.to_dense("full", seq=s), blocks[s] & full)
    assert layout.fwd_idx.numel() >= int(layout.fwd_ptr[-1]) == layout.nnz


def test_a_3d_mask_is_one_table_shared_by_the_batch_and_one_head_serves_all():
    mask = bits((1, 4, 4), seed=3)
    layout = sf.layout_from_block_mask(mask, seq_len=64, block_size=16, causal=True, num_heads=4)
    assert (layout.num_seqs, layout.table_heads, layout.num_heads) == (1, 1, 4)
    assert_tables_match_host(layout, mask.cpu().numpy()[None], 64, 64, 16, True, 4)
    assert layout.to_dense().shape == (4, 4, 4)


# ---------------------------------------------------------------------- topk_layout
def expected_topk(scores, k, seq_len, kv_len, bs, causal, include=None):
    """Per row: the k best visible blocks with a score above -inf (all of them if fewer),
    plus include's blocks; bool ``[S, H, nq, nk]``."""
    visible, _ = geometry_oracle(seq_len, kv_len, bs, causal)
    s = np.where(visible, scores.cpu().double().numpy(), -np.inf)
    order = np.argsort(-s, axis=-1, kind="stable")
    rank = np.argsort(order, axis=-1)
    keep = (rank < k) & (s > -np.inf)
    if include is not None:
        keep |= include
    return keep & visible


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("seq_len,kv_len,bs", GEOMETRIES[:4])
def test_topk_keeps_exactly_the_k_best_visible_blocks(seq_len, kv_len, bs, causal):
    geo = sf.compile(sf.dense(), seq_len, kv_len=kv_len, block_size=bs)
    nq, nk = geo.num_q_blocks, geo.num_kv_blocks
    scores = rnd((2, 3, nq, nk), seed=nq + nk)
    k = 2
    layout = sf.topk_layout(scores, k, seq_len=seq_len, kv_len=kv_len, block_size=bs, causal=causal)
    want = expected_topk(scores, k, seq_len, kv_len, bs, causal)
    visible, _ = geometry_oracle(seq_len, kv_len, bs, causal)
    for s in range(2):
        np.testing.assert_array_equal(layout.to_dense(seq=s), want[s])
        # rows keep k blocks, or every visible one when fewer are
        np.testing.assert_array_equal(layout.row_counts(s), np.minimum(k, visible.sum(-1))[None].repeat(3, 0))
    assert_tables_match_host(layout, want, seq_len, kv_len, bs, causal, 3)


def test_topk_with_fewer_visible_blocks_than_k_keeps_them_all():
    scores = rnd((1, 2, 6, 6), seed=5)
    layout = sf.topk_layout(scores, 4, seq_len=96, block_size=16, causal=True)
    # row i of a causal square grid sees i + 1 blocks
    np.testing.assert_array_equal(layout.row_counts()[0], np.minimum(4, np.arange(1, 7)))
    all_visible = sf.topk_layout(scores, 100, seq_len=96, block_size=16, causal=True)
    dense_causal = sf.compile(sf.dense(), 96, block_size=16, causal=True, num_heads=2)
    np.testing.assert_array_equal(all_visible.to_dense(), dense_causal.to_dense())
    np.testing.assert_array_equal(all_visible.to_dense("full"), dense_causal.to_dense("full"))


def test_topk_minus_inf_excludes_and_ties_keep_exactly_k():
    scores = torch.zeros(1, 1, 4, 4, device=DEVICE)
    scores[0, 0, 1, 2] = 1.0                     # strictly best: always kept
    scores[0, 0, 2, :] = float("-inf")           # no candidate at all: an empty row
    scores[0, 0, 3, :3] = float("-inf")          # one candidate
    layout = sf.topk_layout(scores, 2, seq_len=64, block_size=16)
    dense = layout.to_dense()[0]
    np.testing.assert_array_equal(dense.sum(-1), [2, 2, 0, 1])  # ties: exactly k of the tied
    assert dense[1, 2] and dense[3, 3]


def test_topk_include_pattern_and_layout():
    scores = rnd((2, 2, 6, 6), seed=11)
    include = sf.local(0) | sf.global_blocks(1)
    layout = sf.topk_layout(scores, 1, seq_len=90, block_size=16, causal=True, include=include)
    inc = sf.compile(include, 90, block_size=16, causal=True).to_dense()[0]
    want = expected_topk(scores, 1, 90, 90, 16, True, include=inc)
    for s in range(2):
        np.testing.assert_array_equal(layout.to_dense(seq=s), want[s])
    assert_tables_match_host(layout, want, 90, 90, 16, True, 2)
    # a per-head pattern widens a one-head selection to its heads; a layout works as well
    per_head = sf.per_head([sf.local(0), sf.columns([2])])
    by_head = sf.topk_layout(scores[:, :1], 1, seq_len=90, block_size=16, include=per_head, num_heads=2)
    assert by_head.table_heads == 2
    assert by_head.to_dense()[1][:, 2].all() and not by_head.to_dense()[0][:, 2].all()
    as_layout = sf.topk_layout(scores, 1, seq_len=90, block_size=16, causal=True,
                               include=sf.compile(include, 90, block_size=16, causal=True, num_heads=2))
    np.testing.assert_array_equal(as_layout.to_dense(seq=1), layout.to_dense(seq=1))


def test_compiled_builder_gives_the_eager_tables():
    include = sf.local(0) | sf.global_blocks(1)
    scores = rnd((2, 2, 6, 7), seed=2)

    def build(x):
        layout = sf.topk_layout(x, 2, seq_len=80, kv_len=100, block_size=16, causal=True,
                                include=include)
        return tuple(getattr(layout, name) for name in TABLES)

    compiled = dict(zip(TABLES, torch.compile(build, fullgraph=True)(scores)))
    eager = dict(zip(TABLES, build(scores)))
    for name in TABLES:
        got, want = compiled[name], eager[name]
        if name.endswith("_idx"):
            # the used entries: on CUDA the eager build's kernels leave the capacity tail unwritten
            used = int(eager[name[:3] + "_ptr"][-1])
            assert int(compiled[name[:3] + "_ptr"][-1]) == used, name
            got, want = got[:used], want[:used]
        assert torch.equal(got, want), name

    def from_mask(m):
        return sf.layout_from_block_mask(m, seq_len=80, kv_len=100, block_size=16, causal=True)

    mask = bits((2, 2, 6, 7), seed=4)
    layout = torch.compile(from_mask, fullgraph=True)(mask)
    np.testing.assert_array_equal(layout.to_dense(seq=1), from_mask(mask).to_dense(seq=1))


# ---------------------------------------------------------------------- the Triton build kernels
def both_paths(monkeypatch, build):
    """(torch chain's layout, kernels' layout) of ``build()``; every table equal up to its
    ``ptr[-1]`` (the kernels leave the capacity tails unwritten), the capacities too."""
    from sparseflash import dynamic

    monkeypatch.setattr(dynamic, "_BUILD_KERNELS", False)
    chain = build()
    monkeypatch.setattr(dynamic, "_BUILD_KERNELS", True)
    kernels = build()
    _assert_same_tables(chain, kernels)
    return chain, kernels


def _assert_same_tables(chain, kernels):
    for name in TABLES:
        a, b = getattr(chain, name), getattr(kernels, name)
        assert b.dtype == torch.int32 and b.device == a.device and b.is_contiguous(), name
        assert a.shape == b.shape, (name, a.shape, b.shape)
        if name.endswith("_idx"):                # compare the used entries only
            used = int(getattr(chain, name[:3] + "_ptr")[-1])
            assert int(getattr(kernels, name[:3] + "_ptr")[-1]) == used, name
            a, b = a[:used], b[:used]
        assert torch.equal(a, b), (name, a.tolist(), b.tolist())
    assert kernels.seqs.tolist() == chain.seqs.tolist()
    assert (kernels.table_heads, kernels.num_heads) == (chain.table_heads, chain.num_heads)


KERNEL_GEOMETRIES = GEOMETRIES + [pytest.param(1100, 1030, 16, id="two-words")]   # nk > 64


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("seq_len,kv_len,bs", KERNEL_GEOMETRIES)
def test_kernels_build_the_chains_tables_from_a_mask(monkeypatch, seq_len, kv_len, bs, causal):
    geo = sf.compile(sf.dense(), seq_len, kv_len=kv_len, block_size=bs)
    nq, nk = geo.num_q_blocks, geo.num_kv_blocks
    mask = bits((2, 2, nq, nk), seed=nq + 3 * nk)
    mask[0, 1, 0] = False                       # an empty row
    mask[1, 0] = False                          # a table with no block at all
    mask[1, 1, :, -1] = True                    # a full last column
    chain, kernels = both_paths(monkeypatch, lambda: sf.layout_from_block_mask(
        mask, seq_len=seq_len, kv_len=kv_len, block_size=bs, causal=causal))
    assert_tables_match_host(kernels, mask.cpu().numpy(), seq_len, kv_len, bs, causal, 2)
    shared = mask[0]                            # 3-D: one table for the batch, one head for 4
    both_paths(monkeypatch, lambda: sf.layout_from_block_mask(
        shared[:1], seq_len=seq_len, kv_len=kv_len, block_size=bs, causal=causal, num_heads=4))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("seq_len,kv_len,bs", KERNEL_GEOMETRIES)
def test_kernels_build_the_chains_top_k(monkeypatch, seq_len, kv_len, bs, causal):
    geo = sf.compile(sf.dense(), seq_len, kv_len=kv_len, block_size=bs)
    nq, nk = geo.num_q_blocks, geo.num_kv_blocks
    g = torch.Generator().manual_seed(nq * nk)
    scores = torch.randint(-2, 3, (2, 2, nq, nk), generator=g).float().to(DEVICE)  # many ties
    scores[0, 0, -1] = float("-inf")            # a row with no candidate
    scores[1, 1, 0, 1:] = float("-inf")         # a row with one
    scores[1, 0] = rnd((nq, nk), seed=nq)       # distinct scores
    for k in (1, 3, nk + 5 if nk < 16 else 12):  # k past the visible count keeps them all
        chain, kernels = both_paths(monkeypatch, lambda: sf.topk_layout(
            scores, k, seq_len=seq_len, kv_len=kv_len, block_size=bs, causal=causal))
    want = expected_topk(scores, 3, seq_len, kv_len, bs, causal)
    _, kernels = both_paths(monkeypatch, lambda: sf.topk_layout(
        scores, 3, seq_len=seq_len, kv_len=kv_len, block_size=bs, causal=causal))
    assert_tables_match_host(kernels, want, seq_len, kv_len, bs, causal, 2)


def test_kernels_top_k_with_include_shared_heads_dtypes_and_strides(monkeypatch):
    seq_len, kv_len, bs = 90, 120, 16                                  # nq = 7, nk = 8
    scores = rnd((2, 2, 7, 8), seed=31)
    scores[0, 1, 2, :4] = 0.5                                          # ties
    include = sf.local(0) | sf.global_blocks(1)
    kw = dict(seq_len=seq_len, kv_len=kv_len, block_size=bs, causal=True)
    _, kernels = both_paths(monkeypatch, lambda: sf.topk_layout(scores, 2, include=include, **kw))
    inc = sf.compile(include, seq_len, kv_len=kv_len, block_size=bs, causal=True).to_dense()[0]
    assert_tables_match_host(kernels, expected_topk(scores, 2, seq_len, kv_len, bs, True, include=inc),
                             seq_len, kv_len, bs, True, 2)
    # one head of scores widened by a per-head pattern (GQA-style num_heads), and a layout
    per_head = sf.per_head([sf.local(0), sf.columns([2]), sf.local(1), sf.global_blocks(1)])
    both_paths(monkeypatch, lambda: sf.topk_layout(scores[:, :1], 1, include=per_head, num_heads=4, **kw))
    both_paths(monkeypatch, lambda: sf.topk_layout(scores[:, :1], 2, num_heads=4, **kw))
    as_layout = sf.compile(include, seq_len, kv_len=kv_len, block_size=bs, causal=True)
    both_paths(monkeypatch, lambda: sf.topk_layout(scores, 3, include=as_layout, **kw))
    # half precision (ties after rounding), float64, and a non-contiguous view
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        both_paths(monkeypatch, lambda: sf.topk_layout(scores.to(dtype), 3, **kw))
    transposed = scores.transpose(0, 1).contiguous().transpose(0, 1)
    assert not transposed.is_contiguous()
    both_paths(monkeypatch, lambda: sf.topk_layout(transposed, 2, **kw))


@pytest.mark.parametrize("tile,nk", [(32, 8), (64 * 32, 8), (2048, 70)], ids=["one-row", "wide-tile", "three-words"])
def test_kernels_with_other_row_tiles(monkeypatch, tile, nk):
    from sparseflash import dynamic

    monkeypatch.setattr(dynamic, "_ROW_TILE", tile)                    # ROWS = 1, and up to 16
    scores = torch.randint(-1, 2, (2, 3, 7, nk), generator=torch.Generator().manual_seed(tile)).float()
    kw = dict(seq_len=100, kv_len=nk * 16 - 4, block_size=16, causal=True)
    both_paths(monkeypatch, lambda: sf.topk_layout(scores.to(DEVICE), 3, include=sf.local(0), **kw))
    both_paths(monkeypatch, lambda: sf.layout_from_block_mask(scores.to(DEVICE) > 0, **kw))


def test_kernels_with_more_padded_words_than_rows(monkeypatch):
    """nq = 260 pads to 512 query blocks: the transposed rows have 16 words, 9 of them
    written by the transpose kernel (4 per step); the unwritten ones are never read."""
    mask = bits((1, 1, 260, 257), seed=5)
    mask[0, 0, :, 0] = True                                         # a full first column
    chain, kernels = both_paths(monkeypatch, lambda: sf.layout_from_block_mask(
        mask, seq_len=260 * 16, kv_len=257 * 16 - 3, block_size=16, causal=True))
    assert kernels.nnz == chain.nnz > 0


def test_ties_go_to_the_lower_key_block_on_both_paths(monkeypatch):
    scores = torch.zeros(1, 1, 4, 4, device=DEVICE)
    scores[0, 0, 1, 3] = 1.0
    scores[0, 0, 3, 0] = -0.0                                          # equal to 0.0
    chain, _ = both_paths(monkeypatch, lambda: sf.topk_layout(scores, 2, seq_len=64, block_size=16))
    np.testing.assert_array_equal(chain.to_dense()[0], [[1, 1, 0, 0], [1, 0, 0, 1],
                                                        [1, 1, 0, 0], [1, 1, 0, 0]])


def test_top_k_order_at_the_float_extremes(monkeypatch):
    """Infinities, the largest finite floats, subnormals and signed zeros: the rounds take
    blocks in the oracle's order (descending, ties to the lower block, -0.0 equal to 0.0)."""
    tiny = torch.finfo(torch.float32).tiny
    row = torch.tensor([float("inf"), -3.4e38, 1e-45, -1e-45, 0.0, -0.0, 3.4e38, tiny,
                        -tiny, -1.0, float("inf"), 1e-45, -0.0, 2.0, -3.4e38, float("-inf")])
    g = torch.Generator().manual_seed(3)
    scores = torch.stack([row[torch.randperm(16, generator=g)] for _ in range(6)])[None, None]
    kw = dict(seq_len=6 * 16, kv_len=16 * 16, block_size=16)
    for k in (1, 4, 9, 15):
        chain, kernels = both_paths(monkeypatch, lambda: sf.topk_layout(scores.to(DEVICE), k, **kw))
        np.testing.assert_array_equal(kernels.to_dense()[0], expected_topk(scores, k, 96, 256, 16, False)[0, 0])


# ---------------------------------------------------------------------- the Gluon build kernels (sm_90)
IS_SM90 = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
sm90 = pytest.mark.skipif(not IS_SM90, reason="needs an sm_90 GPU: Gluon has no interpreter")


@sm90
@pytest.mark.parametrize("tpr,warps,clanes,cwarps", [(2, 1, None, 1), (1, 4, 1, 4), (4, 1, 4, 2), (8, 2, 2, 1)],
                         ids=["two-lanes", "row-per-thread", "four-lanes", "eight-lanes"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gluon_build_kernels_give_the_chains_tables(monkeypatch, tpr, warps, clanes, cwarps, causal):
    """The Gluon row, transpose and compaction kernels (forced on: no silent fallback to the
    ``tl`` ones) against the torch chain: ties, -inf, an include pattern, half precision,
    kv_len != seq_len, a ragged last block, the issue's 512 x 512 grid and 2040 key blocks
    (64 bitmask words a row); lanes per row 1 to 8 in both kernels."""
    from sparseflash import dynamic

    for name, value in dict(_ROW_GLUON=True, _GLUON_TPR=tpr, _GLUON_WARPS=warps,
                            _GLUON_COMPACT_LANES=clanes, _GLUON_COMPACT_WARPS=cwarps,
                            _GLUON_TRANSPOSE=True).items():
        monkeypatch.setattr(dynamic, name, value)
    for seq_len, kv_len, bs, k in ((50, 50, 16, 2), (40, 100, 32, 3), (1100, 1030, 16, 12),
                                  (3000, 1000, 64, 5), (512 * 128, 512 * 128, 128, 16),
                                  (2000 * 16, 2040 * 16, 16, 16)):
        geo = sf.compile(sf.dense(), seq_len, kv_len=kv_len, block_size=bs)
        nq, nk = geo.num_q_blocks, geo.num_kv_blocks
        g = torch.Generator().manual_seed(nq + nk)
        scores = torch.randn(2, 3, nq, nk, generator=g).to(DEVICE)
        scores[0] = scores[0].mul(2).round()                           # ties
        scores[1, 0, 0] = float("-inf")                                # a row with no candidate
        kw = dict(seq_len=seq_len, kv_len=kv_len, block_size=bs, causal=causal)
        for dtype in (torch.float32, torch.bfloat16):
            both_paths(monkeypatch, lambda: sf.topk_layout(scores.to(dtype), k, **kw))
        both_paths(monkeypatch, lambda: sf.topk_layout(scores, k, include=sf.local(0) | sf.global_blocks(1), **kw))
        both_paths(monkeypatch, lambda: sf.layout_from_block_mask(scores > 0.5, **kw))


@sm90
def test_gluon_build_kernels_are_what_runs_by_default_on_sm90(monkeypatch):
    from sparseflash import dynamic
    from sparseflash.kernels import build, build_gluon

    monkeypatch.setattr(dynamic, "_ROW_GLUON", None)
    launched = []
    for module, name in ((build_gluon, "_topk_rows_kernel"), (build_gluon, "_transpose_kernel"),
                         (build_gluon, "_compact_kernel"),
                         (build, "_rows_kernel")):
        kernel = getattr(module, name)
        monkeypatch.setattr(module, name, _Recorder(kernel, f"{module.__name__}.{name}", launched))
    sf.topk_layout(rnd((1, 2, 8, 8), seed=3), 2, seq_len=128, block_size=16, causal=True)
    assert launched == ["sparseflash.kernels.build_gluon._topk_rows_kernel",
                        "sparseflash.kernels.build_gluon._transpose_kernel",
                        "sparseflash.kernels.build_gluon._compact_kernel",
                        "sparseflash.kernels.build_gluon._compact_kernel"]
    # rows past the Gluon row kernel's width (here lowered to 32 key blocks) take the tl one;
    # forced on, it refuses by name
    launched.clear()
    monkeypatch.setattr(dynamic, "_GLUON_ROWS_MAX_NK", 32)
    sf.topk_layout(rnd((1, 1, 2, 40), seed=4), 2, seq_len=32, kv_len=40 * 16, block_size=16)
    assert launched[0] == "sparseflash.kernels.build._rows_kernel"
    monkeypatch.setattr(dynamic, "_ROW_GLUON", True)
    with pytest.raises(RuntimeError, match="key blocks padded"):
        sf.topk_layout(rnd((1, 1, 2, 40), seed=4), 2, seq_len=32, kv_len=40 * 16, block_size=16)


class _Recorder:
    def __init__(self, kernel, name, log):
        self.kernel, self.name, self.log = kernel, name, log

    def __getitem__(self, grid):
        self.log.append(self.name)
        return self.kernel[grid]


_GLUON_BUILD_COMPILE = r"""
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from sparseflash.kernels import build_gluon

which = sys.argv[1]
kernel = getattr(build_gluon, which)
constexprs = {"_topk_rows_kernel": dict(NK_PAD=512, W=16, V=4, TPR=4, EVEN=True, HAS_INCLUDE=True,
                                        NUM_WARPS=1),
              "_transpose_kernel": dict(W=16, WQ=16),
              "_compact_kernel": dict(W=16, TW=4, NUM_WARPS=1)}[which]
signature = {n: "constexpr" if n in constexprs else "*bf16" if n == "src_ptr" else
             "*i32" if n.endswith("_ptr") else "i32" for n in kernel.arg_names}
compiled = triton.compile(GluonASTSource(kernel, signature, constexprs),
                          target=GPUTarget("cuda", 90, 32), options=dict(num_warps=constexprs.get("NUM_WARPS", 1)))
sys.stdout.write(compiled.asm["ptx"])
"""


@pytest.mark.parametrize("which", ["_topk_rows_kernel", "_transpose_kernel", "_compact_kernel"])
def test_gluon_build_kernels_compile_for_sm90(which):
    """On any host: each Gluon build kernel compiles to sm_90 PTX (in a fresh process: under
    TRITON_INTERPRET=1 Gluon's decorator gives an interpreted function); the transpose gathers
    its bits in registers (no shuffle, no shared memory, no barrier), the row kernel's four
    lanes per row reduce by butterfly shuffles, popcounts are single instructions."""
    from test_hopper import compiled_in_fresh_process

    ptx = compiled_in_fresh_process(_GLUON_BUILD_COMPILE, which)
    assert ".target sm_90" in ptx and "st.global" in ptx
    if which == "_transpose_kernel":
        assert "shfl" not in ptx and "bar.sync" not in ptx and "st.shared" not in ptx
    if which == "_topk_rows_kernel":
        assert "shfl.sync.bfly" in ptx            # four lanes per row reduce by butterflies
    assert "popc.b32" in ptx


def test_the_kernels_run_by_default_on_cuda_only(monkeypatch):
    from sparseflash import dynamic

    monkeypatch.setattr(dynamic, "_BUILD_KERNELS", None)
    t = torch.zeros(1, 1, 4, 4)
    assert not dynamic._use_kernels(t, 4, 4)
    assert dynamic._use_kernels(t.to("cuda"), 4, 4) if torch.cuda.is_available() else True
    monkeypatch.setattr(dynamic, "_BUILD_KERNELS", True)
    assert dynamic._use_kernels(t, 4, 4) and not dynamic._use_kernels(t, 4, dynamic._KERNELS_MAX_NK + 1)
    assert not dynamic._use_kernels(t, dynamic._KERNELS_MAX_NK + 1, 4)


# ---------------------------------------------------------------------- attention
def run_and_compare(layout, blocks, *, B, H, Hkv, N, Nk, d, bs, causal, backend, seed=0, **mods):
    q, k, v = (rnd(s, seed + i).requires_grad_(True)
               for i, s in enumerate([(B, H, N, d), (B, Hkv, Nk, d), (B, Hkv, Nk, d)]))
    do = rnd((B, H, N, d), seed + 3)
    if "dropout_p" in mods:
        torch.manual_seed(seed)
    out, lse = sparse_attention(q, k, v, layout, return_lse=True, backend=backend, **mods)
    grads = torch.autograd.grad(out, (q, k, v), do)
    mask = token_oracle(np.broadcast_to(blocks, (B,) + blocks.shape[1:]), N, Nk, bs, causal)
    if "key_padding_mask" in mods:
        mask = mask & torch.as_tensor(mods["key_padding_mask"]).cpu()[:, None, None, :]
    kw = {}
    if "dropout_p" in mods:
        from sparseflash.attention import _rng_ints
        from sparseflash.philox import draw_seed, dropout_keep

        torch.manual_seed(seed)
        s0, off = _rng_ints(draw_seed())
        bh = (torch.arange(B)[:, None] * H + torch.arange(H)[None, :])[:, :, None, None]
        kw.update(keep=dropout_keep(s0, off, bh, torch.arange(N), torch.arange(Nk), mods["dropout_p"]),
                  dropout_p=mods["dropout_p"])
    if "alibi_slopes" in mods:
        kw.update(alibi_slopes=mods["alibi_slopes"].cpu(), positions=positions(N, Nk))
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_(True) for t in (q, k, v))
    ref, ref_lse = reference_attention(q64, k64, v64, scale=1 / math.sqrt(d), mask=mask,
                                       softcap=mods.get("softcap", 0.0), **kw)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.cpu().double())
    for t in (out, *grads):
        assert not torch.isnan(t).any()
    assert torch.equal(torch.isinf(lse).cpu(), torch.isinf(ref_lse)), "rows that see nothing"
    assert (out.cpu().double() - ref).abs().max() < 3e-5
    finite = ~torch.isinf(ref_lse)
    assert (lse.cpu().double() - ref_lse)[finite].abs().max() < 3e-5
    for g, r in zip(grads, ref_grads):
        assert (g.cpu().double() - r).abs().max() < 1e-4
    return out, lse, grads


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_over_per_batch_masks_that_differ(backend):
    B, H, bs = 2, 2, 16
    mask = bits((B, H, 4, 4), seed=21, p=0.5)
    mask[0, 1, 2] = False                                  # a query block that sees nothing
    mask[1, 0] = ~mask[0, 0]                               # batch elements differ
    layout = sf.layout_from_block_mask(mask, seq_len=64, block_size=bs, causal=True)
    blocks = mask.cpu().numpy()
    out, lse, (dq, _, _) = run_and_compare(layout, blocks, B=B, H=H, Hkv=H, N=64, Nk=64, d=32,
                                           bs=bs, causal=True, backend=backend)
    empty = slice(2 * bs, 3 * bs)
    assert (out[0, 1, empty] == 0).all() and torch.isinf(lse[0, 1, empty]).all()
    assert (dq[0, 1, empty] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_reads_the_capacity_tails(backend):
    """The build kernels leave the tails past ptr[-1] unwritten: poisoned with out-of-range
    block indices, they do not change the attention, forward or backward."""
    mask = bits((2, 2, 5, 5), seed=31, p=0.5)
    layout = sf.layout_from_block_mask(mask, seq_len=72, block_size=16, causal=True)
    for d in ("fwd", "bwd"):
        idx = getattr(layout, f"{d}_idx")
        used = int(getattr(layout, f"{d}_ptr")[-1])
        assert used < idx.numel()                          # there is a tail to poison
        idx[used:] = 1 << 30
    run_and_compare(layout, mask.cpu().numpy(), B=2, H=2, Hkv=2, N=72, Nk=72, d=32, bs=16,
                    causal=True, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_over_topk_with_gqa_head_dim_80_and_longer_keys(backend):
    B, H, Hkv, N, Nk, bs = 2, 4, 2, 40, 100, 32
    scores = rnd((B, H, 3, 4), seed=8)
    include = sf.global_blocks(1)
    layout = sf.topk_layout(scores, 1, seq_len=N, kv_len=Nk, block_size=bs, causal=True, include=include)
    inc = sf.compile(include, N, kv_len=Nk, block_size=bs, causal=True).to_dense()[0]
    blocks = expected_topk(scores, 1, N, Nk, bs, True, include=inc)
    run_and_compare(layout, blocks, B=B, H=H, Hkv=Hkv, N=N, Nk=Nk, d=80, bs=bs, causal=True,
                    backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_softcap_and_alibi_over_a_topk_layout(backend):
    B, H, N, bs = 2, 2, 64, 16
    scores = rnd((B, H, 4, 4), seed=1)
    layout = sf.topk_layout(scores, 2, seq_len=N, block_size=bs, causal=True, include=sf.local(0))
    blocks = expected_topk(scores, 2, N, N, bs, True, include=np.eye(4, dtype=bool))
    mods = dict(dropout_p=0.25, softcap=0.5, alibi_slopes=torch.tensor([0.5, 0.125], device=DEVICE))
    out, _, _ = run_and_compare(layout, blocks, B=B, H=H, Hkv=H, N=N, Nk=N, d=32, bs=bs,
                                causal=True, backend=backend, **mods)
    plain, _, _ = run_and_compare(layout, blocks, B=B, H=H, Hkv=H, N=N, Nk=N, d=32, bs=bs,
                                  causal=True, backend=backend)
    assert (plain - out).abs().max() > 1e-3                # the modifiers did something


def test_scores_get_no_gradient_and_the_call_is_differentiable_in_q():
    q = rnd((1, 2, 64, 32), 0).requires_grad_(True)
    pooled = q.reshape(1, 2, 4, 16, 32).mean(3)                        # [B, H, nq, d]
    scores = pooled @ pooled.transpose(-1, -2)                         # requires grad
    assert scores.requires_grad
    layout = sf.topk_layout(scores, 2, seq_len=64, block_size=16, causal=True)
    out = sparse_attention(q, q.detach(), q.detach(), layout, backend="torch")
    (g,) = torch.autograd.grad(out.sum(), q)
    assert g.abs().sum() > 0                                           # through q only
    assert not any(getattr(layout, name).requires_grad for name in TABLES)


# ---------------------------------------------------------------------- host queries and devices
def test_estimate_to_dense_and_describe_accept_them():
    scores = rnd((3, 2, 4, 4), seed=6)
    layout = sf.topk_layout(scores, 2, seq_len=64, block_size=16, causal=True)
    est = sf.estimate(layout, 64)
    assert est.batch == 3
    assert est.flops == 4 * 64 * 16 ** 2 * layout.nnz        # summed over the batch's tables
    assert est.flops < sf.estimate(sf.compile(sf.dense(), 64, block_size=16, causal=True, num_heads=2),
                                   64, batch=3).flops
    with pytest.raises(ValueError, match="batch"):
        sf.estimate(layout, 64, batch=2)
    assert layout.to_dense(seq=2).shape == (2, 4, 4)
    assert "batch tables=3" in layout.describe() and layout.to_string()
    shared = sf.layout_from_block_mask(torch.ones(2, 4, 4, dtype=torch.bool, device=DEVICE),
                                       seq_len=64, block_size=16)
    assert sf.estimate(shared, 64, batch=5).flops == 5 * 4 * 64 * 16 ** 2 * 32


def test_to_on_the_same_device_wraps_the_same_tensors():
    layout = sf.layout_from_block_mask(bits((2, 1, 4, 4), 1), seq_len=64, block_size=16)
    t = layout.to(DEVICE)
    assert t.fwd_idx is layout.fwd_idx and t.bwd_ptr is layout.bwd_ptr
    assert t.seqs.dtype == torch.int32 and t.seqs.tolist() == layout.seqs.tolist()
    assert layout.to(DEVICE) is t
    assert layout.host().on_device is False and layout.host().device is None


def test_the_launcher_never_reads_device_tables_on_the_host(monkeypatch):
    from sparseflash.kernels import launch

    def refuse(*args, **kwargs):
        raise AssertionError("the heavy-first order read a device table on the host")

    monkeypatch.setattr(launch, "_launch_order", refuse)
    layout = sf.layout_from_block_mask(torch.ones(2, 4, 4, dtype=torch.bool, device=DEVICE),
                                       seq_len=64, block_size=16)
    q = rnd((1, 2, 64, 32), 0).requires_grad_(True)
    out = sparse_attention(q, q, q, layout, backend="triton")
    out.sum().backward()
    assert q.grad is not None


# ---------------------------------------------------------------------- bad input
def _mask(**kw):
    kw = {"seq_len": 64, "block_size": 16, **kw}
    return lambda m: sf.layout_from_block_mask(m, **kw)


def _topk(k=2, **kw):
    kw = {"seq_len": 64, "block_size": 16, **kw}
    return lambda s: sf.topk_layout(s, k, **kw)


BAD = [
    pytest.param(_mask(), torch.ones(1, 2, 4, 4), TypeError, "mask", id="mask-not-bool"),
    pytest.param(_mask(), torch.ones(1, 2, 4, 5, dtype=torch.bool), ValueError, r"mask.*\(4, 4\)", id="mask-grid"),
    pytest.param(_mask(kv_len=100), torch.ones(1, 2, 4, 4, dtype=torch.bool), ValueError, r"mask.*\(5, 7\)",
                 id="mask-grid-kv"),
    pytest.param(_mask(), torch.ones(4, 4, dtype=torch.bool), ValueError, "mask", id="mask-2d"),
    pytest.param(_mask(num_heads=3), torch.ones(1, 2, 4, 4, dtype=torch.bool), ValueError, "mask", id="mask-heads"),
    pytest.param(_topk(k=0), torch.ones(1, 2, 4, 4), ValueError, "k must", id="k-zero"),
    pytest.param(_topk(k=-1), torch.ones(1, 2, 4, 4), ValueError, "k must", id="k-negative"),
    pytest.param(_topk(k=1.5), torch.ones(1, 2, 4, 4), TypeError, "k must", id="k-float"),
    pytest.param(_topk(), torch.ones(1, 2, 4, 4, dtype=torch.int64), TypeError, "scores", id="scores-int"),
    pytest.param(_topk(), torch.ones(2, 4, 4), ValueError, "scores", id="scores-3d"),
    pytest.param(_topk(include=sf.compile(sf.local(0), 128, block_size=16)), torch.ones(1, 2, 4, 4),
                 ValueError, "include", id="include-layout-grid"),
    pytest.param(_topk(include=sf.per_head([sf.local(0)] * 3)), torch.ones(1, 2, 4, 4), ValueError,
                 "include", id="include-heads"),
    pytest.param(_topk(include="local(0)"), torch.ones(1, 2, 4, 4), TypeError, "include", id="include-text"),
    pytest.param(_topk(block_size=24), torch.ones(1, 2, 4, 4), ValueError, "block_size", id="block-size"),
]


@pytest.mark.parametrize("build,arg,error,match", BAD)
def test_bad_input_names_the_argument(build, arg, error, match):
    with pytest.raises(error, match=match):
        build(arg.to(DEVICE))


def test_huge_requests_are_refused_before_allocating():
    n = 1 << 20
    scores = torch.empty(64, 64, n // 16, n // 16, device="meta")
    with pytest.raises(ValueError, match="block_size"):
        sf.topk_layout(scores, 4096, seq_len=n, block_size=16)
    mask = torch.empty(64, 64, n // 16, n // 16, dtype=torch.bool, device="meta")
    with pytest.raises(ValueError, match="block_size"):
        sf.layout_from_block_mask(mask, seq_len=n, block_size=16)


def test_calls_a_device_layout_cannot_serve():
    layout = sf.layout_from_block_mask(bits((2, 2, 4, 4), 1), seq_len=64, block_size=16)
    q = rnd((3, 2, 64, 32), 0)
    with pytest.raises(ValueError, match="batch"):
        sparse_attention(q, q, q, layout)
    q2 = rnd((2, 2, 48, 32), 0)
    with pytest.raises(ValueError, match="seq_len"):
        sparse_attention(q2, q2, q2, layout)
    q = rnd((2, 2, 64, 32), 0)
    with pytest.raises(ValueError, match="cu_seqlens"):
        sparse_attention(q[:1], q[:1], q[:1], sf.layout_from_block_mask(bits((2, 4, 4), 1), seq_len=64, block_size=16),
                         cu_seqlens=torch.tensor([0, 32, 64], dtype=torch.int32, device=DEVICE))
    with pytest.raises(ValueError, match="key_padding_mask must be a bool tensor of shape"):
        sparse_attention(q, q, q, layout, key_padding_mask=torch.ones(2, 48, dtype=torch.bool, device=DEVICE))


@pytest.mark.parametrize("backend", BACKENDS)
def test_key_padding_over_device_built_layouts(backend):
    # a device-built layout's full blocks were judged without the mask: with one, every block
    # goes through the masked path (BlockLayout.every_block_partial), padding inside blocks the
    # tables call full, a whole padded block, and a batch element with no valid key at all
    B, H, N, bs = 3, 2, 80, 16
    scores = rnd((B, H, 5, 5), seed=12)
    layout = sf.topk_layout(scores, 2, seq_len=N, block_size=bs, causal=True, include=sf.local(0))
    blocks = expected_topk(scores, 2, N, N, bs, True, include=np.eye(5, dtype=bool))
    kpm = torch.ones(B, N, dtype=torch.bool)
    kpm[0, 3:9] = False                           # inside block 0, full for later rows
    kpm[0, 32:48] = False                         # block 2, whole
    kpm[1, 50:] = False                           # right padding crossing a block edge
    kpm[2] = False                                # nothing to attend: out 0, lse -inf
    kpm = kpm.to(DEVICE)
    out, lse, grads = run_and_compare(layout, blocks, B=B, H=H, Hkv=H, N=N, Nk=N, d=32, bs=bs, causal=True,
                                      backend=backend, key_padding_mask=kpm)
    assert (out[2] == 0).all() and torch.isinf(lse[2]).all() and (grads[0][2] == 0).all()
    assert layout.fwd_nfull.sum() > 0             # the layout itself keeps its full blocks
    partial = layout.every_block_partial()
    assert int(partial.fwd_nfull.sum()) == 0 and int(partial.bwd_nfull.sum()) == 0
    assert partial.fwd_idx is layout.fwd_idx and partial.bwd_ptr is layout.bwd_ptr
    with pytest.raises(ValueError, match="device-built"):
        sf.compile(sf.local(1), 64, block_size=16).every_block_partial()


def test_the_worked_example_in_the_docs_runs():
    import re
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "docs" / "dynamic.md"
    if not path.exists():
        pytest.skip("no docs/dynamic.md in this tree")
    example = re.findall(r"```python\n(.*?)```", path.read_text(), re.S)[-1]   # the worked one
    namespace = {}
    exec(compile(example, str(path), "exec"), namespace)
    assert namespace["layout"].on_device and namespace["est"].predicted_ms < namespace["dense"].predicted_ms
    assert all(p.grad is not None for p in namespace["qkv"].parameters())
