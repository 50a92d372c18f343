"""The compiler against the BlockLayout contract: CSR <-> dense, the transposed backward
tables and their order, full/partial blocks against a token-level brute force, caching,
device tables and every bad-input error."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparseflash as sf
from pattern_strategies import any_patterns


# ---------------------------------------------------------------------------- references
def csr_rows(ptr, idx, nfull):
    """[(full part, partial part)] per CSR row, rebuilt as the layout docstring says."""
    out = []
    for r in range(len(ptr) - 1):
        row = np.asarray(idx[ptr[r]:ptr[r + 1]])
        out.append((row[:nfull[r]], row[nfull[r]:]))
    return out


def blocks_of(rows, nrows_per_head, ncols, table_heads):
    dense = np.zeros((table_heads * nrows_per_head, ncols), bool)
    for r, (full, part) in enumerate(rows):
        dense[r, full] = True
        dense[r, part] = True
    return dense.reshape(table_heads, nrows_per_head, ncols)


def geometry(seq_len, kv_len, block_size):
    """Bottom-right positions (q_pos, k_pos), the absolute grid side n, and the local grid
    (first row i0, first column j0, nq, nk), written out from the BlockLayout docstring."""
    frame = max(seq_len, kv_len)
    q_pos, k_pos = frame - seq_len, frame - kv_len
    n = math.ceil(frame / block_size)
    i0, j0 = q_pos // block_size, k_pos // block_size
    return q_pos, k_pos, n, i0, j0, n - i0, n - j0


def token_brute_force(pattern, heads, seq_len, kv_len, block_size, causal, window=None):
    """(visible, full) block masks [H, nq, nk] from the token-level definition: the pattern
    on the absolute grid, a stored block visible if any of its token pairs passes the
    presence, causal and window tests, and full if all pairs of its rectangle do."""
    q_pos, k_pos, n, i0, j0, nq, nk = geometry(seq_len, kv_len, block_size)
    block_mask = pattern.to_dense(n, n, heads)[:, i0:i0 + nq, j0:j0 + nk]
    t = np.arange(i0 * block_size, (i0 + nq) * block_size)[:, None]       # absolute positions
    u = np.arange(j0 * block_size, (j0 + nk) * block_size)[None, :]
    ok = (t >= q_pos) & (t < q_pos + seq_len) & (u >= k_pos) & (u < k_pos + kv_len)
    if causal:
        ok &= u <= t
    if window is not None:
        if window[0] >= 0:
            ok &= u >= t - window[0]
        if window[1] >= 0:
            ok &= u <= t + window[1]
    tiles = ok.reshape(nq, block_size, nk, block_size)
    any_ok, all_ok = tiles.any(axis=(1, 3)), tiles.all(axis=(1, 3))
    return block_mask & any_ok, block_mask & all_ok


def check_layout(layout, pattern):
    """Every promise of the BlockLayout docstring, checked against independent references."""
    H, nq, nk = layout.shape
    th = layout.table_heads
    bs = layout.block_size
    assert (nq, nk) == geometry(layout.seq_len, layout.kv_len, bs)[-2:]
    assert th in (1, H)
    for name, n in (("fwd_ptr", th * nq + 1), ("fwd_nfull", th * nq), ("bwd_ptr", th * nk + 1), ("bwd_nfull", th * nk)):
        arr = getattr(layout, name)
        assert arr.dtype == np.int32 and arr.shape == (n,), name
        assert not arr.flags.writeable
    assert layout.fwd_idx.dtype == np.int32 and layout.bwd_idx.dtype == np.int32
    assert layout.fwd_ptr[0] == 0 and layout.fwd_ptr[-1] == layout.fwd_idx.size
    assert layout.bwd_ptr[0] == 0 and layout.bwd_ptr[-1] == layout.bwd_idx.size

    # forward: full first, each part strictly ascending
    fwd = csr_rows(layout.fwd_ptr, layout.fwd_idx, layout.fwd_nfull)
    for full, part in fwd:
        assert (np.diff(full) > 0).all() and (np.diff(part) > 0).all()
        assert not set(full) & set(part)
        assert ((np.concatenate([full, part]) >= 0) & (np.concatenate([full, part]) < nk)).all()
    dense = blocks_of(fwd, nq, nk, th)
    full_dense = blocks_of([(f, f[:0]) for f, _ in fwd], nq, nk, th)

    # against the pattern and the token-level brute force
    visible, full = token_brute_force(pattern, H, layout.seq_len, layout.kv_len, bs, layout.causal,
                                      layout.window)
    np.testing.assert_array_equal(np.broadcast_to(dense, (H, nq, nk)), visible)
    np.testing.assert_array_equal(np.broadcast_to(full_dense, (H, nq, nk)), full)
    np.testing.assert_array_equal(layout.to_dense(), visible)
    np.testing.assert_array_equal(layout.to_dense("full"), full)
    np.testing.assert_array_equal(layout.to_dense("partial"), visible & ~full)

    # backward: the transpose, full first, each part ascending
    bwd = csr_rows(layout.bwd_ptr, layout.bwd_idx, layout.bwd_nfull)
    for fullq, partq in bwd:
        assert (np.diff(fullq) > 0).all() and (np.diff(partq) > 0).all()
    np.testing.assert_array_equal(blocks_of(bwd, nk, nq, th), dense.transpose(0, 2, 1))
    np.testing.assert_array_equal(blocks_of([(f, f[:0]) for f, _ in bwd], nk, nq, th), full_dense.transpose(0, 2, 1))

    # summaries
    assert layout.nnz == int(visible.sum())
    assert layout.num_full == int(full.sum())
    assert layout.num_partial == int((visible & ~full).sum())
    assert layout.density == pytest.approx(visible.sum() / (H * nq * nk))
    np.testing.assert_array_equal(layout.row_counts(), visible.sum(-1))
    assert layout.max_row_blocks == int(visible.sum(-1).max(initial=0))
    assert layout.max_col_blocks == int(visible.sum(-2).max(initial=0))


# ---------------------------------------------------------------------------- round trips
CASES = [
    # (id, pattern, seq_len, kv_len, block_size, causal, num_heads)
    ("local-causal", sf.local(2), 1000, None, 64, True, 1),
    ("local-kv-longer", sf.local(2), 300, 777, 16, True, 1),
    ("local-kv-shorter", sf.local(2), 777, 300, 32, True, 2),
    ("dense-causal-multiple", sf.dense(), 512, 512, 64, True, 1),
    ("dense-causal-kv-longer", sf.dense(), 200, 520, 16, True, 1),
    ("dense-causal-kv-much-shorter", sf.dense(), 520, 40, 16, True, 1),
    ("dense-noncausal-cut", sf.dense(), 130, 70, 16, False, 1),
    ("bigbird-strided", sf.bigbird(window=3, globals=2, random=3) | sf.strided(5), 2000, None, 32, False, 1),
    ("bigbird-strided-causal", sf.bigbird(window=3, globals=2, random=3) | sf.strided(5), 2000, 1500, 32, True, 3),
    ("butterfly-causal", sf.butterfly(), 1111, 999, 16, True, 1),
    ("fixed", sf.fixed(4, 2), 640, 700, 64, False, 1),
    ("complement", ~sf.local(1), 333, 444, 16, True, 1),
    ("per-head", sf.per_head(sf.local(1), sf.strided(3) | sf.rows([-1]), ~sf.dense()), 400, 300, 16, True, 3),
    ("per-head-kv-longer", sf.per_head(sf.dense(), sf.columns([0, 2])), 100, 1000, 32, True, 2),
    ("from-mask-3d", sf.from_mask(np.random.default_rng(3).random((2, 7, 5)) < 0.5), 7 * 16 - 3, 5 * 16 - 9, 16, True, 2),
    ("single-block", sf.dense(), 1, 1, 16, True, 1),
    ("rows-only", sf.rows([0]), 640, 640, 64, False, 4),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_layout_contract(case):
    _, pattern, seq_len, kv_len, bs, causal, heads = case
    layout = sf.compile(pattern, seq_len, kv_len=kv_len, block_size=bs, causal=causal, num_heads=heads, cache=False)
    assert (layout.seq_len, layout.kv_len) == (seq_len, kv_len or seq_len)
    assert (layout.block_size, layout.causal, layout.num_heads) == (bs, causal, heads)
    check_layout(layout, pattern)


@settings(max_examples=60, deadline=None)
@given(any_patterns(), st.integers(4 * 16, 12 * 16), st.integers(4 * 16, 12 * 16), st.booleans(), st.integers(1, 3))
def test_layout_contract_random(pattern, seq_len, kv_len, causal, heads):
    heads = pattern.num_heads or heads
    layout = sf.compile(pattern, seq_len, kv_len=kv_len, block_size=16, causal=causal, num_heads=heads, cache=False)
    assert layout.table_heads == (heads if pattern.num_heads else 1)
    check_layout(layout, pattern)


def test_token_mask_agrees_with_brute_force():
    # 100 queries against 150 keys: query row i sits at absolute position i + 50
    layout = sf.compile(sf.local(1) | sf.columns([0]), 100, kv_len=150, block_size=16, causal=True)
    blocks = (sf.local(1) | sf.columns([0])).to_dense(10, 10)[0]
    t, s = np.arange(100)[:, None] + 50, np.arange(150)[None, :]
    want = blocks[t // 16, s // 16] & (s <= t)
    np.testing.assert_array_equal(layout.to_token_mask(), want)


def test_window_layouts_follow_the_token_rule():
    for window, causal in (((40, 0), True), ((3, 70), False), ((-1, 20), False), ((100, -1), True)):
        for pattern in (sf.dense(), sf.local(2) | sf.global_blocks(1)):
            layout = sf.compile(pattern, 300, kv_len=420, block_size=32, causal=causal, window_size=window)
            assert layout.window == window
            check_layout(layout, pattern)
            t, u = np.arange(300)[:, None] + 120, np.arange(420)[None, :]
            mask = layout.to_token_mask()
            assert not (mask & ((u < t - window[0]) if window[0] >= 0 else False)).any()
            assert not (mask & ((u > t + window[1]) if window[1] >= 0 else False)).any()


def test_dense_window_costs_the_band_only():
    """dense() under a 4096-token window at 1M tokens: O(N * window) blocks, compiled fast."""
    import time
    t0 = time.perf_counter()
    layout = sf.compile(sf.dense(), 1 << 20, block_size=128, causal=True, window_size=(4096, 0), cache=False)
    assert time.perf_counter() - t0 < 5.0
    assert layout.max_row_blocks == 4096 // 128 + 1
    assert layout.nnz <= (1 << 20) // 128 * (4096 // 128 + 1)


def test_causal_partial_blocks_are_the_diagonal():
    """Square causal, lengths a multiple of the block: exactly the diagonal is partial."""
    layout = sf.compile(sf.dense(), 1024, block_size=128, causal=True)
    nq = 8
    np.testing.assert_array_equal(layout.to_dense("partial")[0], np.eye(nq, dtype=bool))
    np.testing.assert_array_equal(layout.to_dense("full")[0], np.tri(nq, k=-1, dtype=bool))
    # kv_len = seq_len + 64: the queries start half a block in, so each query tile straddles
    # two absolute blocks; the blocks the causal line crosses are the diagonal ones
    layout = sf.compile(sf.dense(), 1024, kv_len=1088, block_size=128, causal=True)
    part = layout.to_dense("partial")[0]
    assert part.shape == (9, 9)
    # row 0 (positions 64..127) and row 8 (1024..1087) have absent rows: partial throughout
    want_part, want_full = np.eye(9, dtype=bool), np.tri(9, k=-1, dtype=bool)
    want_part[8], want_full[8] = True, False
    np.testing.assert_array_equal(part, want_part)
    np.testing.assert_array_equal(layout.to_dense("full")[0], want_full)
    check_layout(layout, sf.dense())


def test_empty_rows():
    # kv_len < seq_len with causal: the first query blocks see nothing (they produce zeros)
    layout = sf.compile(sf.dense(), 1024, kv_len=256, block_size=128, causal=True)
    counts = np.diff(layout.fwd_ptr)
    assert counts[:5].tolist() == [0, 0, 0, 0, 0] and (counts[6:] > 0).all()
    check_layout(layout, sf.dense())
    # a pattern with empty rows, and one that is empty everywhere
    layout = sf.compile(sf.rows([1]), 512, block_size=64)
    assert np.diff(layout.fwd_ptr).tolist() == [0, 8, 0, 0, 0, 0, 0, 0]
    empty = sf.compile(sf.dense() - sf.dense(), 512, block_size=64)
    assert empty.nnz == 0 and empty.density == 0 and empty.fwd_idx.size == 0 and empty.max_row_blocks == 0
    check_layout(empty, sf.dense() - sf.dense())


def test_density_and_nnz():
    layout = sf.compile(sf.local(1), 8 * 64, block_size=64, num_heads=4)
    assert layout.nnz == 4 * (8 * 3 - 2)
    assert layout.density == pytest.approx((8 * 3 - 2) / 64)
    causal = sf.compile(sf.dense(), 8 * 64, block_size=64, causal=True, num_heads=2)
    assert causal.nnz == 2 * 36 and causal.num_partial == 2 * 8


# ---------------------------------------------------------------------------- cache and devices
def test_cache():
    p = sf.bigbird(window=2, globals=1, random=2) | sf.strided(7)
    a = sf.compile(p, 4096, block_size=64)
    b = sf.compile(sf.bigbird(window=2, globals=1, random=2) | sf.strided(7), 4096, block_size=64)
    assert a is b  # equal patterns hit the cache
    c = sf.compile(p, 4096, block_size=64, cache=False)
    assert c is not a
    np.testing.assert_array_equal(c.fwd_idx, a.fwd_idx)
    for other in (dict(kv_len=4000), dict(block_size=128), dict(causal=True), dict(num_heads=2)):
        assert sf.compile(p, 4096, **{"block_size": 64, **other}) is not a
    assert sf.compile(p, 4096, kv_len=4096, block_size=64) is a  # kv_len defaults to seq_len
    with pytest.raises(AttributeError):
        a.fwd_idx = a.fwd_idx
    with pytest.raises(ValueError):
        a.fwd_idx[0] = 1  # read-only arrays


@pytest.fixture
def empty_cache():
    sf.compile_cache_clear()
    yield
    sf.compile_cache_clear()


def test_cache_is_bounded_by_table_bytes(monkeypatch, empty_cache):
    from sparseflash import compiler

    layouts = [sf.compile(sf.local(w), 4096, block_size=16) for w in range(3)]
    sizes = [sum(getattr(l, name).nbytes for name in ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr",
                                                       "bwd_idx", "bwd_nfull")) for l in layouts]
    info = sf.compile_cache_info()
    assert (info.hits, info.misses, info.currsize, info.bytes) == (0, 3, 3, sum(sizes))
    assert info.maxsize == compiler.CACHE_MAX_ENTRIES and info.max_bytes == compiler.CACHE_MAX_BYTES

    # room for the two newest only: the least recently used one goes
    assert sf.compile(sf.local(0), 4096, block_size=16) is layouts[0]  # a hit makes it recent
    monkeypatch.setattr(compiler, "CACHE_MAX_BYTES", sizes[0] + sizes[2])
    bigger = sf.compile(sf.local(3), 4096, block_size=16)
    info = sf.compile_cache_info()
    assert info.bytes <= info.max_bytes and info.hits == 1
    assert sf.compile(sf.local(3), 4096, block_size=16) is bigger
    assert sf.compile(sf.local(1), 4096, block_size=16) is not layouts[1]  # evicted

    # a layout larger than the whole budget is returned but not kept
    monkeypatch.setattr(compiler, "CACHE_MAX_BYTES", 100)
    big = sf.compile(sf.dense(), 4096, block_size=16)
    assert sf.compile_cache_info().bytes <= 100
    assert sf.compile(sf.dense(), 4096, block_size=16) is not big

    sf.compile_cache_clear()
    assert tuple(sf.compile_cache_info())[:5] == (0, 0, compiler.CACHE_MAX_ENTRIES, 0, 0)


def test_a_cache_hit_skips_the_size_check(monkeypatch, empty_cache):
    """The size bound walks the pattern tree; a cached layout passed it when it was built, so a
    hit returns before it (host time of every call), while a miss and ``cache=False`` check."""
    from sparseflash import compiler

    checks = []
    real = compiler._check_table_size
    monkeypatch.setattr(compiler, "_check_table_size", lambda *a: checks.append(a) or real(*a))
    first = sf.compile(sf.local(1), 2048, block_size=16)
    assert len(checks) == 1
    assert sf.compile(sf.local(1), 2048, block_size=16) is first and len(checks) == 1
    assert sf.compile_cache_info().hits == 1
    sf.compile(sf.local(1), 2048, block_size=16, cache=False)
    sf.compile(sf.local(2), 2048, block_size=16)
    assert len(checks) == 3


def test_cache_is_bounded_by_entries(monkeypatch, empty_cache):
    from sparseflash import compiler

    monkeypatch.setattr(compiler, "CACHE_MAX_ENTRIES", 2)
    first = sf.compile(sf.local(0), 1024, block_size=16)
    for w in (1, 2):
        sf.compile(sf.local(w), 1024, block_size=16)
    assert sf.compile_cache_info().currsize == 2
    assert sf.compile(sf.local(0), 1024, block_size=16) is not first


def test_oversized_layouts_are_refused_before_building(monkeypatch):
    import time

    # used to run 22 s and reach 12.6 GiB before a MemoryError
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"seq_len=1048576 and block_size=16.*int32"):
        sf.compile(sf.per_head(*[sf.dense()] * 8), 1 << 20, block_size=16, num_heads=8)
    with pytest.raises(ValueError, match=r"seq_len=1048576, kv_len=2097152 and block_size=16"):
        sf.compile(sf.dense(), 1 << 20, kv_len=1 << 21, block_size=16, cache=False)
    assert time.perf_counter() - t0 < 1.0
    # sparse patterns at long lengths are bounded tightly enough to pass
    assert sf.compile(sf.local(1) | sf.global_blocks(1) | sf.random(2), 1 << 22, block_size=16,
                      cache=False).nnz > 0

    from sparseflash import compiler

    monkeypatch.setattr(compiler, "MAX_TABLE_BYTES", 1 << 20)
    with pytest.raises(ValueError, match=r"seq_len=8192 and block_size=16.*MAX_TABLE_BYTES"):
        sf.compile(sf.dense(), 8192, block_size=16, cache=False)
    sf.compile(sf.local(1), 8192, block_size=16, cache=False)


def test_deeply_nested_patterns_are_a_value_error():
    p = sf.dense()
    for i in range(5000):
        p = p - sf.strided(i + 2)
    with pytest.raises(ValueError, match="nested too deeply"):
        sf.compile(p, 1024, block_size=16, cache=False)


def test_to_cpu_tables():
    torch = pytest.importorskip("torch")
    layout = sf.compile(sf.local(1) | sf.columns([0]), 1000, kv_len=700, block_size=32, causal=True)
    t = layout.to("cpu")
    for name in ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull"):
        tensor = getattr(t, name)
        assert tensor.dtype == torch.int32 and tensor.device.type == "cpu"
        np.testing.assert_array_equal(tensor.numpy(), getattr(layout, name))
    assert layout.to("cpu") is t
    assert layout.to(torch.device("cpu")) is t


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,match", [
    (dict(seq_len=0), "seq_len"),
    (dict(seq_len=-5), "seq_len"),
    (dict(seq_len=10.0), "seq_len"),
    (dict(kv_len=0), "kv_len"),
    (dict(kv_len=-1), "kv_len"),
    (dict(block_size=8), "block_size"),
    (dict(block_size=512), "block_size"),
    (dict(block_size=100), "block_size"),
    (dict(block_size=0), "block_size"),
    (dict(block_size=True), "block_size"),
    (dict(num_heads=0), "num_heads"),
    (dict(causal="yes"), "causal"),
], ids=lambda x: str(x))
def test_bad_compile_arguments(kwargs, match):
    args = dict(seq_len=1024, block_size=64)
    args.update(kwargs)
    seq_len = args.pop("seq_len")
    with pytest.raises(ValueError, match=match):
        sf.compile(sf.local(1), seq_len, **args)


def test_bad_patterns_at_compile():
    with pytest.raises(ValueError, match="window"):
        sf.local(-1)
    with pytest.raises(ValueError, match="stride"):
        sf.strided(0)
    with pytest.raises(ValueError, match="from_mask.*shape"):
        sf.compile(sf.from_mask(np.ones((4, 5), bool)), 4 * 64, kv_len=6 * 64, block_size=64)
    with pytest.raises(ValueError, match="from_mask.*shape"):
        sf.compile(sf.from_mask(np.ones((2, 5, 4), bool)), 4 * 64, kv_len=5 * 64, block_size=64, num_heads=2)
    with pytest.raises(ValueError, match="num_heads"):
        sf.compile(sf.from_mask(np.ones((2, 4, 4), bool)), 4 * 64, block_size=64, num_heads=3)
    with pytest.raises(ValueError, match="num_heads"):
        sf.compile(sf.per_head(sf.dense(), sf.local(1)), 1024, num_heads=3)
    with pytest.raises(TypeError, match="parse"):
        sf.compile("local(1)", 1024)
    with pytest.raises(TypeError):
        sf.compile(None, 1024)
