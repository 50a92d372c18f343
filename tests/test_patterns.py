"""Pattern primitives against their rules, written out here as direct O(nq * nk) definitions,
plus random draws, per-head patterns, from_mask / from_fn, value semantics and set algebra."""
import dataclasses
import itertools
import math
import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparseflash as sf
from pattern_strategies import any_patterns, trees

# Grids: square and not, powers of two and not, a single row or column.
GRIDS = [(1, 1), (1, 7), (7, 1), (4, 4), (5, 13), (13, 5), (16, 16), (17, 31), (33, 20), (64, 100)]


def grid_ij(nq, nk):
    return np.meshgrid(np.arange(nq), np.arange(nk), indexing="ij")


def resolve(blocks, n):
    """The reference reading of a blocks argument: int -> first min(b, n); list -> indices."""
    if isinstance(blocks, int):
        return set(range(min(blocks, n)))
    return {b + n if b < 0 else b for b in blocks}


# --- the rules, one line each, as the issue states them
def ref_dense(nq, nk):
    return np.ones((nq, nk), bool)


def ref_local(nq, nk, w):
    i, j = grid_ij(nq, nk)
    return np.abs(i - j) <= w


def ref_strided(nq, nk, s):
    i, j = grid_ij(nq, nk)
    return (i - j) % s == 0


def ref_dilated(nq, nk, w, d):
    i, j = grid_ij(nq, nk)
    return (np.abs(i - j) <= w * d) & ((i - j) % d == 0)


def ref_rows(nq, nk, b):
    i, _ = grid_ij(nq, nk)
    return np.isin(i, list(resolve(b, nq)))


def ref_columns(nq, nk, b):
    _, j = grid_ij(nq, nk)
    return np.isin(j, list(resolve(b, nk)))


def ref_global(nq, nk, b):
    return ref_rows(nq, nk, b) | ref_columns(nq, nk, b)


def ref_butterfly(nq, nk, factors):
    if factors is None:
        factors = (max(nq, nk) - 1).bit_length()  # ceil(log2(max(nq, nk)))
    out = np.zeros((nq, nk), bool)
    for i in range(nq):
        for j in range(nk):
            x = i ^ j
            out[i, j] = x == 0 or any(x == 2**t for t in range(factors))
    return out


def ref_fixed(nq, nk, s, c):
    i, j = grid_ij(nq, nk)
    return (i // s == j // s) | (j % s >= s - c)


PRIMITIVE_CASES = [
    ("dense", sf.dense(), ref_dense),
    *[(f"local{w}", sf.local(w), lambda nq, nk, w=w: ref_local(nq, nk, w)) for w in (0, 1, 3, 40)],
    *[(f"strided{s}", sf.strided(s), lambda nq, nk, s=s: ref_strided(nq, nk, s)) for s in (1, 3, 8)],
    *[(f"dilated{w}x{d}", sf.dilated(w, d), lambda nq, nk, w=w, d=d: ref_dilated(nq, nk, w, d))
      for w, d in ((0, 2), (2, 1), (2, 3), (5, 4))],
    *[(f"{kind}{b}", getattr(sf, kind)(b), lambda nq, nk, b=b, f=f: f(nq, nk, b))
      for kind, f in (("rows", ref_rows), ("columns", ref_columns), ("global_blocks", ref_global))
      for b in (0, 1, 2, 1000, [0], [0, -1], [-1, 0, 0])],
    *[(f"butterfly{f}", sf.butterfly(f), lambda nq, nk, f=f: ref_butterfly(nq, nk, f)) for f in (None, 0, 1, 2, 9)],
    *[(f"fixed{s}_{c}", sf.fixed(s, c), lambda nq, nk, s=s, c=c: ref_fixed(nq, nk, s, c))
      for s, c in ((1, 1), (4, 1), (4, 0), (5, 2), (3, 3))],
    ("longformer", sf.longformer(2, [0, -1]), lambda nq, nk: ref_local(nq, nk, 2) | ref_global(nq, nk, [0, -1])),
    ("longformer_default", sf.longformer(), lambda nq, nk: ref_local(nq, nk, 1) | ref_global(nq, nk, 1)),
]


@pytest.mark.parametrize("name,pattern,ref", PRIMITIVE_CASES, ids=[c[0] for c in PRIMITIVE_CASES])
@pytest.mark.parametrize("nq,nk", GRIDS, ids=[f"{a}x{b}" for a, b in GRIDS])
def test_primitive_matches_rule(name, pattern, ref, nq, nk):
    got = pattern.to_dense(nq, nk)
    assert got.shape == (1, nq, nk)
    np.testing.assert_array_equal(got[0], ref(nq, nk))


@pytest.mark.parametrize("seq_len,kv_len,block_size", [
    (1000, 1000, 64),   # not a multiple of the block
    (300, 777, 16),     # kv_len > seq_len, neither a multiple
    (777, 300, 32),     # kv_len < seq_len
    (4096, 2048, 128),
    (16, 5000, 256),
], ids=["1000-bs64", "300x777-bs16", "777x300-bs32", "4096x2048-bs128", "16x5000-bs256"])
@pytest.mark.parametrize("name,pattern,ref", PRIMITIVE_CASES[::3], ids=[c[0] for c in PRIMITIVE_CASES[::3]])
def test_primitive_compiled_on_token_lengths(name, pattern, ref, seq_len, kv_len, block_size):
    # bottom-right alignment: the pattern lives on the square grid of absolute blocks, and the
    # layout's rows/columns are the blocks the queries/keys occupy
    frame = max(seq_len, kv_len)
    n = math.ceil(frame / block_size)
    i0, j0 = (frame - seq_len) // block_size, (frame - kv_len) // block_size
    layout = sf.compile(pattern, seq_len, kv_len=kv_len, block_size=block_size)
    assert layout.shape == (1, n - i0, n - j0)
    np.testing.assert_array_equal(layout.to_dense()[0], ref(n, n)[i0:, j0:])


def test_primitives_on_random_grids():
    rng = np.random.default_rng(1234)
    for _ in range(60):
        nq, nk = (int(x) for x in rng.integers(1, 70, size=2))
        w, d, s = (int(x) for x in rng.integers(0, 9, size=3))
        d, s = d + 1, s + 1
        cases = [
            (sf.local(w), ref_local(nq, nk, w)),
            (sf.strided(s), ref_strided(nq, nk, s)),
            (sf.dilated(w, d), ref_dilated(nq, nk, w, d)),
            (sf.butterfly(), ref_butterfly(nq, nk, None)),
            (sf.fixed(s, min(w, s)), ref_fixed(nq, nk, s, min(w, s))),
            (sf.global_blocks(w), ref_global(nq, nk, w)),
        ]
        for p, want in cases:
            np.testing.assert_array_equal(p.to_dense(nq, nk)[0], want, err_msg=f"{p} on {nq}x{nk}")


def test_huge_arguments_are_cheap_or_rejected():
    """Ints up to 2**62 compile (no int64 overflow); butterfly levels past the grid add nothing
    and must not build a huge offset list; larger ints are a PatternError."""
    big = 2**62
    np.testing.assert_array_equal(sf.butterfly(big).to_dense(37, 20), sf.butterfly().to_dense(37, 20))
    np.testing.assert_array_equal(sf.butterfly(64).to_dense(9, 9), ref_butterfly(9, 9, None)[None])
    for p, want in [(sf.local(big), ref_dense(9, 9)), (sf.strided(big), ref_local(9, 9, 0)),
                    (sf.dilated(big, big), ref_local(9, 9, 0)), (sf.fixed(big, big), ref_dense(9, 9)),
                    (sf.rows(big), ref_dense(9, 9)), (sf.random(big, seed=big), ref_dense(9, 9))]:
        np.testing.assert_array_equal(p.to_dense(9, 7)[0], want[:, :7])
        # 9 queries against 7 keys: the keys are the last 7 absolute blocks
        np.testing.assert_array_equal(sf.compile(p, 9 * 16, kv_len=7 * 16, block_size=16).to_dense()[0],
                                      want[:, 2:])
    for make in (lambda: sf.local(big + 1), lambda: sf.random(1, seed=big + 1), lambda: sf.rows([-big - 1]),
                 lambda: sf.bigbird(globals=[big + 1])):
        with pytest.raises(sf.PatternError, match="2\\*\\*62"):
            make()


# ---------------------------------------------------------------------------- random
def random_rows(per_row, seed, nq, nk):
    """Key blocks of each query block, read from the compiled forward table (so duplicates,
    which a dense mask would hide, show up)."""
    from sparseflash.pattern import Grid

    row, col = np.divmod(sf.random(per_row, seed).keys(Grid(nq, nk, 1)), nk)
    return [col[row == i] for i in range(nq)]


@pytest.mark.parametrize("per_row,nq,nk", [
    (1, 10, 1), (3, 7, 2), (2, 50, 9), (3, 40, 100), (5, 33, 20), (40, 9, 100), (7, 5, 7), (0, 4, 4),
], ids=lambda x: str(x))
def test_random_exact_distinct_count(per_row, nq, nk):
    rows_ = random_rows(per_row, 0, nq, nk)
    for r in rows_:
        assert len(r) == min(per_row, nk)
        assert len(np.unique(r)) == len(r)
        assert ((r >= 0) & (r < nk)).all()


def test_random_deterministic_and_seeded():
    a = sf.random(3, seed=5).to_dense(40, 50)
    np.testing.assert_array_equal(a, sf.random(3, seed=5).to_dense(40, 50))
    assert not np.array_equal(a, sf.random(3, seed=6).to_dense(40, 50))
    # a fresh compile (no cache) draws the same blocks
    r1 = random_rows(3, 5, 40, 50)
    r2 = random_rows(3, 5, 40, 50)
    assert all(np.array_equal(x, y) for x, y in zip(r1, r2))


def test_random_same_for_every_head():
    layout = sf.compile(sf.random(4, seed=2), 2048, block_size=64, num_heads=5)
    dense = layout.to_dense()
    for h in range(1, 5):
        np.testing.assert_array_equal(dense[h], dense[0])
    # and as one operand of a per-head pattern, it is the same on every head too
    ph = sf.per_head(sf.random(4, seed=2), sf.random(4, seed=2) | sf.local(0)).to_dense(32, 32, 2)
    assert (ph[0] <= ph[1]).all()


@pytest.mark.parametrize("per_row,nk", [(2, 9), (1, 6), (3, 5), (40, 50)], ids=lambda x: str(x))
def test_random_uniform(per_row, nk):
    """Every column is drawn with probability per_row / nk; with few subsets, every subset
    is equally likely (chi-square, far past any plausible fluctuation)."""
    nq = 6000
    dense = sf.random(per_row, seed=11).to_dense(nq, nk)[0]
    expected = nq * per_row / nk
    col_counts = dense.sum(0)
    sd = math.sqrt(expected * (1 - per_row / nk))
    assert np.abs(col_counts - expected).max() < 6 * sd
    if math.comb(nk, per_row) <= 40:
        subsets = {}
        for row in dense:
            key = tuple(np.flatnonzero(row))
            subsets[key] = subsets.get(key, 0) + 1
        assert len(subsets) == math.comb(nk, per_row)
        e = nq / len(subsets)
        chi2 = sum((c - e) ** 2 / e for c in subsets.values())
        dof = len(subsets) - 1
        assert chi2 < dof + 8 * math.sqrt(2 * dof)


def test_bigbird_is_local_global_random():
    for nq, nk in [(20, 20), (9, 31), (40, 12)]:
        got = sf.bigbird(window=2, globals=[0, -1], random=3, seed=4).to_dense(nq, nk)[0]
        rnd = sf.random(3, seed=4).to_dense(nq, nk)[0]
        want = ref_local(nq, nk, 2) | ref_global(nq, nk, [0, -1]) | rnd
        np.testing.assert_array_equal(got, want)
    default = sf.bigbird().to_dense(16, 16)[0]
    np.testing.assert_array_equal(default, ref_local(16, 16, 1) | ref_global(16, 16, 1)
                                  | sf.random(1).to_dense(16, 16)[0])


# ---------------------------------------------------------------------------- rows / columns / globals
@pytest.mark.parametrize("pattern,axis", [
    (sf.rows([5]), "query"), (sf.rows([-6]), "query"), (sf.columns([7]), "key"),
    (sf.columns([-8]), "key"), (sf.global_blocks([6]), "query"), (sf.bigbird(globals=[0, 99]), "query"),
    (sf.longformer(globals=[-9]), "query"),
])
def test_block_index_outside_grid_is_a_compile_error(pattern, axis):
    with pytest.raises(ValueError, match=f"outside the {axis} grid"):
        pattern.to_dense(5, 7)
    with pytest.raises(ValueError, match="outside the"):
        sf.compile(pattern, 5 * 64, block_size=64)


def test_global_blocks_checks_both_axes():
    # index 5 is in the key grid (7) but not in the query grid (5)
    with pytest.raises(ValueError, match="query"):
        sf.global_blocks([5]).to_dense(5, 7)
    sf.columns([5]).to_dense(5, 7)  # fine for columns


def test_blocks_argument_types():
    assert sf.rows(2) != sf.rows([0, 1])  # an int and a list are different values ...
    np.testing.assert_array_equal(sf.rows(2).to_dense(6, 6), sf.rows([0, 1]).to_dense(6, 6))  # ... same mask
    np.testing.assert_array_equal(sf.rows(np.int64(2)).to_dense(6, 6), sf.rows(2).to_dense(6, 6))
    assert sf.columns((1, -1)) == sf.columns([1, -1])
    for bad in ("1", 1.5, [1.0], [True], True, None):
        with pytest.raises(ValueError, match="blocks"):
            sf.rows(bad)
    with pytest.raises(ValueError):
        sf.rows(-1)


# ---------------------------------------------------------------------------- per_head
def test_per_head():
    parts = [sf.local(1), sf.strided(3), sf.rows([0, -1]) | sf.local(0)]
    p = sf.per_head(*parts)
    assert p.num_heads == 3
    got = p.to_dense(11, 9, 3)
    want = [ref_local(11, 9, 1), ref_strided(11, 9, 3), ref_rows(11, 9, [0, -1]) | ref_local(11, 9, 0)]
    for h in range(3):
        np.testing.assert_array_equal(got[h], want[h])
    assert sf.per_head(parts) == p  # a list works too
    # a shared pattern combines with every head
    both = (p & sf.local(2)).to_dense(11, 9, 3)
    for h in range(3):
        np.testing.assert_array_equal(both[h], want[h] & ref_local(11, 9, 2))
    compiled = sf.compile(p, 11 * 32, kv_len=9 * 32, block_size=32, num_heads=3)
    assert compiled.table_heads == 3
    square = [ref_local(11, 11, 1), ref_strided(11, 11, 3), ref_rows(11, 11, [0, -1]) | ref_local(11, 11, 0)]
    np.testing.assert_array_equal(compiled.to_dense(), np.stack(square)[:, :, 2:])   # keys: last 9 blocks
    with pytest.raises(ValueError, match="num_heads"):
        sf.compile(p, 512, num_heads=2)
    with pytest.raises(ValueError):
        sf.per_head()
    with pytest.raises(ValueError, match="nested"):
        sf.per_head(p, sf.dense())
    with pytest.raises(TypeError):
        sf.per_head(sf.dense(), "local(1)")
    with pytest.raises(ValueError):  # 3 heads | 2 heads
        sf.compile(p | sf.per_head(sf.dense(), sf.dense()), 512, num_heads=3)


# ---------------------------------------------------------------------------- from_mask / from_fn
def test_from_mask_2d_and_3d():
    rng = np.random.default_rng(0)
    m2 = rng.random((7, 12)) < 0.3
    p = sf.from_mask(m2)
    np.testing.assert_array_equal(p.to_dense(7, 12)[0], m2)
    layout = sf.compile(p, 7 * 16, kv_len=12 * 16, block_size=16, num_heads=2)
    np.testing.assert_array_equal(layout.to_dense(), np.stack([m2, m2]))

    m3 = rng.random((3, 5, 4)) < 0.5
    p3 = sf.from_mask(m3)
    assert p3.num_heads == 3
    np.testing.assert_array_equal(sf.compile(p3, 5 * 32, kv_len=4 * 32, block_size=32, num_heads=3).to_dense(), m3)
    np.testing.assert_array_equal((p3 | sf.local(0)).to_dense(5, 4, 3), m3 | ref_local(5, 4, 0)[None])

    # 0/1 ints and torch tensors are accepted; other values are not
    torch = pytest.importorskip("torch")
    assert sf.from_mask(m2.astype(np.int8)) == p
    assert sf.from_mask(torch.from_numpy(m2)) == p
    with pytest.raises(ValueError, match="bool"):
        sf.from_mask(m2.astype(np.int8) * 2)
    with pytest.raises(ValueError, match="shape"):
        sf.from_mask(np.ones(5, bool))
    with pytest.raises(ValueError, match="shape"):
        sf.from_mask(np.ones((0, 3), bool))


def test_from_mask_value_semantics():
    m = np.eye(6, dtype=bool)
    a, b = sf.from_mask(m), sf.from_mask(m.copy())
    assert a == b and hash(a) == hash(b)
    m[0, 1] = True  # the pattern holds its own copy
    assert sf.from_mask(m) != a
    np.testing.assert_array_equal(a.to_dense(6, 6)[0], np.eye(6, dtype=bool))
    assert "from_mask" in str(a)


def test_from_fn():
    p = sf.from_fn(lambda i, j: (i + 2 * j) % 3 == 0)
    i, j = grid_ij(10, 14)
    np.testing.assert_array_equal(p.to_dense(10, 14)[0], (i + 2 * j) % 3 == 0)
    # a result that only broadcasts to the grid is fine
    np.testing.assert_array_equal(sf.from_fn(lambda i, j: j < 3).to_dense(4, 6)[0], np.broadcast_to(np.arange(6) < 3, (4, 6)))
    with pytest.raises(ValueError, match="bool"):
        sf.from_fn(lambda i, j: i + j).to_dense(3, 3)
    with pytest.raises(ValueError, match="broadcast"):
        sf.from_fn(lambda i, j: np.ones((2, 2), bool)).to_dense(3, 3)
    with pytest.raises(TypeError):
        sf.from_fn(3)


# ---------------------------------------------------------------------------- value semantics
def test_equality_hash_immutability():
    assert sf.local(3) == sf.local(3) and hash(sf.local(3)) == hash(sf.local(3))
    assert sf.local(3) != sf.local(4)
    assert sf.local(2) != sf.dilated(2, 1)  # structurally different, same mask
    np.testing.assert_array_equal(sf.local(2).to_dense(9, 9), sf.dilated(2, 1).to_dense(9, 9))
    a = sf.local(1) | sf.strided(4)
    b = sf.local(1) | sf.strided(4)
    assert a == b and hash(a) == hash(b)
    assert a != (sf.strided(4) | sf.local(1))  # structural, not semantic
    assert {a: 1}[b] == 1
    assert sf.random(2, seed=1) != sf.random(2, seed=2)
    assert sf.bigbird() == sf.bigbird(1, 1, 1, 0)
    for p in (sf.local(1), a, ~a, sf.per_head(a, a), sf.bigbird()):
        field = dataclasses.fields(p)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(p, field, 5)
    with pytest.raises(TypeError):
        sf.local(1) | "dense()"


def chain(op, n):
    """``local(0) op strided(2) op ... op strided(n + 1)``, built the way a Python loop builds it."""
    p = sf.local(0)
    for i in range(n):
        p = op(p, sf.strided(i + 2))
    return p


@pytest.mark.parametrize("op", [operator.or_, operator.and_], ids=["or", "and"])
def test_deep_python_chains_do_not_recurse(op):
    # 5000 levels used to raise RecursionError in keys, hash, == and str
    p, q = chain(op, 5000), chain(op, 5000)
    assert p == q and hash(p) == hash(q) and {p: 1}[q] == 1
    assert p != chain(op, 4999)
    assert sf.parse(str(p)) == p
    layout = sf.compile(p, 64 * 16, block_size=16, cache=False)
    d = np.abs(np.arange(64)[:, None] - np.arange(64)[None, :])
    # strided(s) for s in 2..5001 covers every |i - j| >= 2; local(0) covers i == j
    want = (d == 0) | (d >= 2) if op is operator.or_ else d == 0
    np.testing.assert_array_equal(layout.to_dense()[0], want)


def test_chains_are_flat_and_associative():
    a, b, c = sf.local(1), sf.strided(3), sf.rows([0])
    assert (a | b) | c == a | (b | c) and hash((a | b) | c) == hash(a | (b | c))
    assert (a & b) & c == a & (b & c)
    assert str(a | (b | c)) == "local(1) | strided(3) | rows([0])"
    assert str(a & (b | c) & a) == "local(1) & (strided(3) | rows([0])) & local(1)"
    assert (a | b) | c != (a | c) | b  # still structural: term order counts


@pytest.mark.parametrize("factory,args,name", [
    (sf.local, (-1,), "window"), (sf.strided, (0,), "stride"), (sf.dilated, (-1, 2), "window"),
    (sf.dilated, (1, 0), "dilation"), (sf.random, (-1,), "per_row"), (sf.random, (1, -1), "seed"),
    (sf.butterfly, (-1,), "factors"), (sf.fixed, (0,), "stride"), (sf.fixed, (2, 3), "summary"),
    (sf.local, (1.5,), "window"), (sf.local, (True,), "window"), (sf.bigbird, (-1,), "window"),
    (sf.longformer, (1, "x"), "globals"),
])
def test_bad_arguments(factory, args, name):
    with pytest.raises(sf.PatternError, match=name):
        factory(*args)


# ---------------------------------------------------------------------------- set algebra
ALGEBRA = settings(max_examples=60, deadline=None)


def dense_of(p, nq, nk):
    return p.to_dense(nq, nk)[0]


@ALGEBRA
@given(trees(), trees(), st.integers(4, 12), st.integers(4, 12))
def test_operators_are_set_operations(a, b, nq, nk):
    A, B = dense_of(a, nq, nk), dense_of(b, nq, nk)
    np.testing.assert_array_equal(dense_of(a | b, nq, nk), A | B)
    np.testing.assert_array_equal(dense_of(a & b, nq, nk), A & B)
    np.testing.assert_array_equal(dense_of(a - b, nq, nk), A & ~B)
    np.testing.assert_array_equal(dense_of(~a, nq, nk), ~A)


@ALGEBRA
@given(trees(), trees(), trees(), st.integers(4, 12), st.integers(4, 12))
def test_set_algebra_laws(a, b, c, nq, nk):
    def same(x, y):
        np.testing.assert_array_equal(dense_of(x, nq, nk), dense_of(y, nq, nk))

    same(~(a | b), ~a & ~b)                 # De Morgan
    same(~(a & b), ~a | ~b)
    same(a | a, a)                          # idempotence
    same(a & a, a)
    same(a - b, a & ~b)                     # difference is and-not
    same(a | b, b | a)                      # commutativity
    same(a & b, b & a)
    same((a | b) | c, a | (b | c))          # associativity
    same((a & b) & c, a & (b & c))
    same(a & (b | c), (a & b) | (a & c))    # distributivity
    same(~~a, a)
    same(a - a, ~sf.dense())


@ALGEBRA
@given(trees(max_leaves=4), st.integers(4, 40), st.integers(4, 40))
def test_keys_are_sorted_unique_and_in_grid(p, nq, nk):
    from sparseflash.pattern import Grid

    k = p.keys(Grid(nq, nk, 1))
    assert k.dtype == np.int64
    assert (np.diff(k) > 0).all()
    assert k.size == 0 or (k[0] >= 0 and k[-1] < nq * nk)


@ALGEBRA
@given(any_patterns(), st.integers(1, 40), st.integers(1, 40))
def test_max_nnz_bounds_the_keys(p, nq, nk):
    from sparseflash.pattern import Grid

    g = Grid(nq, nk, p.num_heads or 1)
    try:
        k = p.keys(g)
    except ValueError:  # a list index outside a small grid
        return
    stored = sum(x.size for x in k) if isinstance(k, tuple) else k.size
    assert stored <= p.max_nnz(g)


def test_operator_precedence_matches_python():
    a, b, c = sf.local(1), sf.strided(3), sf.rows([0])
    assert str(a | b & c) == "local(1) | strided(3) & rows([0])"
    assert str((a | b) & c) == "(local(1) | strided(3)) & rows([0])"
    assert str(a - b - c) == "local(1) - strided(3) - rows([0])"
    assert str(a - (b - c)) == "local(1) - (strided(3) - rows([0]))"
    assert str(~(a | b)) == "~(local(1) | strided(3))"
    assert str(~a - b) == "~local(1) - strided(3)"
    assert str(a & ~b) == "local(1) & ~strided(3)"
    for x, y in itertools.product([a, b], [b, c]):
        np.testing.assert_array_equal((x - y).to_dense(7, 7), (x & ~y).to_dense(7, 7))
