"""Block patterns: which query blocks attend to which key blocks.

Every pattern is an immutable value in *block units*: ``i`` is a query block, ``j`` a key
block, ``nq`` and ``nk`` the grid size. Patterns compose with ``|`` (union), ``&``
(intersection), ``-`` (difference) and ``~`` (complement), compare equal when
structurally equal, hash (so they key caches) and print their text form with ``str``.

Internally a pattern materialises as *keys*: a sorted, duplicate-free int64 array of
``i * nk + j``. Primitives produce their keys directly in O(nnz + nq + nk); unions,
intersections and differences merge sorted arrays, so only ``~``, ``from_mask`` and
``from_fn`` ever touch the whole grid.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple, Union as _U

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Pattern", "PatternError", "dense", "local", "strided", "dilated", "rows", "columns",
    "global_blocks", "random", "butterfly", "fixed", "bigbird", "longformer", "from_mask",
    "from_fn", "per_head",
]


class PatternError(ValueError):
    """A pattern or its text form is invalid."""


Blocks = _U[int, Sequence[int], np.ndarray]  # a count (the first n blocks) or block indices
Keys = np.ndarray  # sorted unique int64 keys i * nk + j
HeadKeys = _U[Keys, Tuple[Keys, ...]]  # one shared array, or one per head


@dataclass(frozen=True)
class Grid:
    nq: int
    nk: int
    num_heads: int


# ---------------------------------------------------------------------------- key algebra
def _merge(a: Keys, b: Keys) -> Keys:
    """Sorted concatenation of two sorted arrays (timsort merges the two runs in O(n))."""
    c = np.concatenate([a, b])
    c.sort(kind="stable")
    return c


def _union(a: Keys, b: Keys) -> Keys:
    if a.size == 0:
        return b
    if b.size == 0:
        return a
    c = _merge(a, b)
    keep = np.empty(c.size, dtype=bool)
    keep[0] = True
    np.not_equal(c[1:], c[:-1], out=keep[1:])
    return c[keep]


def _intersect(a: Keys, b: Keys) -> Keys:
    if a.size == 0 or b.size == 0:
        return a[:0]
    c = _merge(a, b)
    return c[1:][c[1:] == c[:-1]]


def _difference(a: Keys, b: Keys) -> Keys:
    if a.size == 0 or b.size == 0:
        return a
    pos = np.searchsorted(b, a)
    pos[pos == b.size] = b.size - 1
    return a[b[pos] != a]


def _complement(a: Keys, g: Grid) -> Keys:
    mask = np.ones(g.nq * g.nk, dtype=bool)
    mask[a] = False
    return np.flatnonzero(mask).astype(np.int64)


def _progressions(g: Grid, start: np.ndarray, step: int, count: np.ndarray) -> Keys:
    """Keys of row i = {start[i] + step*t : 0 <= t < count[i]}, for every row i (count may be <= 0)."""
    count = np.maximum(count, 0).astype(np.int64)
    first = np.cumsum(count) - count                     # position of each row's first key
    # key = i*nk + start[i] + step*(pos - first[i]): one per-row base, repeated, plus
    # step*pos; two arrays of nnz in all (this runs at every compile of a band pattern)
    base = np.arange(g.nq, dtype=np.int64) * g.nk + start.astype(np.int64) - step * first
    keys = np.repeat(base, count)
    pos = np.arange(keys.size, dtype=np.int64)
    if step != 1:
        pos *= step
    keys += pos
    return keys


def _columns_keys(g: Grid, cols: np.ndarray) -> Keys:
    return (np.arange(g.nq, dtype=np.int64)[:, None] * g.nk + cols[None, :].astype(np.int64)).ravel()


def _rows_keys(g: Grid, rws: np.ndarray) -> Keys:
    return (rws.astype(np.int64)[:, None] * g.nk + np.arange(g.nk, dtype=np.int64)[None, :]).ravel()


def _dense_keys(g: Grid) -> Keys:
    return np.arange(g.nq * g.nk, dtype=np.int64)


_MAX_KEPT_TEXT = 1 << 16  # characters of text a pattern keeps from construction (Pattern.__post_init__)
_MAX_INT = 2**62  # bound on int arguments: keeps every int64 computation on block indices exact


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise PatternError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise PatternError(f"{name} must be >= {minimum}, got {value}")
    if value > _MAX_INT:
        raise PatternError(f"{name} must be <= 2**62, got {value}")
    return int(value)


def _distinct_draws(rng, nq: int, nk: int, k: int) -> np.ndarray:
    """``[nq, k]``: per row, the first k distinct values of a stream of uniform draws from
    [0, nk), which is a uniform k-subset. Needs 2k <= nk; O(nq * k log k)."""
    chosen = np.empty((nq, k), dtype=np.int64)
    todo = np.arange(nq)
    m = 2 * k + 16  # expected draws for k distinct are below 1.39 k when 2k <= nk
    while todo.size:
        draws = rng.integers(0, nk, size=(todo.size, m))                  # [rows, m]
        order = np.argsort(draws, axis=1, kind="stable")
        srt = np.take_along_axis(draws, order, axis=1)
        first = np.ones_like(srt, dtype=bool)
        first[:, 1:] = srt[:, 1:] != srt[:, :-1]                           # first copy of a value
        keep = np.zeros_like(first)
        np.put_along_axis(keep, order, first, axis=1)                      # back to draw order
        rank = np.cumsum(keep, axis=1)
        ok = rank[:, -1] >= k
        sel = keep & (rank <= k)
        chosen[todo[ok]] = draws[ok][sel[ok]].reshape(-1, k)
        todo = todo[~ok]
    return chosen


# ---------------------------------------------------------------------------- base class
class Pattern:
    """Base class of every block pattern. Build patterns with the factory functions."""

    __slots__ = ()
    _PREC = 5  # atoms bind tightest; see the operator subclasses

    # --- algebra
    def __or__(self, other: "Pattern") -> "Pattern":
        return Or(self, _as_pattern(other, "|"))

    def __and__(self, other: "Pattern") -> "Pattern":
        return And(self, _as_pattern(other, "&"))

    def __sub__(self, other: "Pattern") -> "Pattern":
        return Sub(self, _as_pattern(other, "-"))

    def __invert__(self) -> "Pattern":
        return Not(self)

    # --- materialisation
    def keys(self, g: Grid) -> HeadKeys:
        """Sorted unique int64 ``i * nk + j`` (one array, or a tuple with one per head)."""
        raise NotImplementedError

    def max_nnz(self, g: Grid) -> int:
        """Upper bound on the keys materialising this pattern holds at once, summed over the
        heads it produces (one table, or one per head). O(size of the tree), no keys built:
        the compiler checks it before it calls :meth:`keys`. It also bounds the final count."""
        return g.nq * g.nk * (self.num_heads or 1)

    def to_dense(self, nq: int, nk: int, num_heads: int = 1) -> np.ndarray:
        """Bool block mask ``[num_heads, nq, nk]`` (O(grid); for tests and small grids)."""
        k = self.keys(Grid(nq, nk, num_heads))
        per = k if isinstance(k, tuple) else (k,) * num_heads
        out = np.zeros((num_heads, nq * nk), dtype=bool)
        for h, kh in enumerate(per):
            out[h, kh] = True
        return out.reshape(num_heads, nq, nk)

    @property
    def num_heads(self) -> Optional[int]:
        """Number of heads a per-head pattern needs, or None when shared by every head."""
        return None

    def __post_init__(self) -> None:
        # The text form, made once at construction from the operands' (O(its length)):
        # torch.compile reads it as a constant string, without tracing _text, and the custom
        # ops take patterns as this text (sparseflash.attention). A tree whose text passes
        # _MAX_KEPT_TEXT keeps none (a deep chain would hold O(depth^2) characters) and
        # prints by walking the tree, as str did before.
        operands = self._operands()
        keep = (all(op._str is not None for op in operands)
                and sum(len(op._str) for op in operands) <= _MAX_KEPT_TEXT)
        object.__setattr__(self, "_str", self._text() if keep else None)

    def _operands(self) -> Tuple["Pattern", ...]:
        return ()

    def __str__(self) -> str:  # the text form; parse(str(p)) == p when has_text_form
        return self._str if self._str is not None else self._text()

    @property
    def has_text_form(self) -> bool:
        """Whether ``parse(str(self)) == self``. False when the tree holds a ``from_mask`` or
        ``from_fn`` leaf: their text (``from_mask(<8x8 mask 47fd586050c5>)``) names the data
        but does not carry it, and the parser rejects it."""
        return "<" not in str(self)

    def _text(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Pattern {self}>"


def _as_pattern(x, op: str) -> Pattern:
    if not isinstance(x, Pattern):
        raise TypeError(f"unsupported operand for {op}: expected a Pattern, got {type(x).__name__}")
    return x


def _fmt_blocks(b) -> str:
    return str(b) if isinstance(b, int) else "[" + ", ".join(str(x) for x in b) + "]"


def _norm_blocks(name: str, b) -> _U[int, Tuple[int, ...]]:
    if isinstance(b, (int, np.integer)) and not isinstance(b, bool):
        return _check_int(name, b, 0)
    if isinstance(b, (list, tuple, np.ndarray)):
        out = []
        for x in b:
            if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
                raise PatternError(f"{name} must be an int or a list of ints, got element {x!r}")
            if abs(int(x)) > _MAX_INT:
                raise PatternError(f"{name}: block index {x} is out of range (|index| <= 2**62)")
            out.append(int(x))
        return tuple(out)
    raise PatternError(f"{name} must be an int or a list of ints, got {type(b).__name__} {b!r}")


def _resolve_blocks(name: str, b, n: int, axis: str) -> np.ndarray:
    """Block indices named by an int (the first n) or a list (negative counts from the end)."""
    if isinstance(b, int):
        return np.arange(min(b, n), dtype=np.int64)
    idx = np.asarray(b, dtype=np.int64)
    bad = (idx < -n) | (idx >= n)
    if bad.any():
        raise ValueError(f"{name}: block index {int(idx[bad][0])} is outside the {axis} grid of {n} blocks")
    return np.unique(np.where(idx < 0, idx + n, idx))


# ---------------------------------------------------------------------------- primitives
@dataclass(frozen=True, repr=False)
class Dense(Pattern):
    """Every block."""

    def keys(self, g):
        return _dense_keys(g)

    def _text(self):
        return "dense()"


@dataclass(frozen=True, repr=False)
class Dilated(Pattern):
    """Keep (i, j) iff |i - j| <= window * dilation and (i - j) mod dilation == 0.

    ``window=None`` means unbounded (that is ``strided``); ``dilation=1`` is ``local``.
    """

    window: Optional[int]
    dilation: int
    kind: str = "dilated"  # how it prints: local / strided / dilated

    def keys(self, g):
        i = np.arange(g.nq, dtype=np.int64)
        d = self.dilation
        lo = -(i // d)  # smallest t with i + d*t >= 0
        hi = (g.nk - 1 - i) // d  # largest t with i + d*t <= nk - 1
        if self.window is not None:
            lo = np.maximum(lo, -self.window)
            hi = np.minimum(hi, self.window)
        return _progressions(g, i + d * lo, d, hi - lo + 1)

    def max_nnz(self, g):
        per_row = -(-g.nk // self.dilation)
        if self.window is not None:
            per_row = min(per_row, 2 * self.window + 1)
        return g.nq * per_row

    def _text(self):
        if self.kind == "local":
            return f"local({self.window})"
        if self.kind == "strided":
            return f"strided({self.dilation})"
        return f"dilated({self.window}, {self.dilation})"


@dataclass(frozen=True, repr=False)
class Rows(Pattern):
    """The named query blocks see every key block (``rows``), every query block sees the
    named key blocks (``columns``), or both (``global_blocks``)."""

    blocks: _U[int, Tuple[int, ...]]
    kind: str  # rows / columns / global_blocks

    def keys(self, g):
        out = None
        if self.kind in ("rows", "global_blocks"):
            out = _rows_keys(g, _resolve_blocks(self.kind, self.blocks, g.nq, "query"))
        if self.kind in ("columns", "global_blocks"):
            c = _columns_keys(g, _resolve_blocks(self.kind, self.blocks, g.nk, "key"))
            out = c if out is None else _union(out, c)
        return out

    def max_nnz(self, g):
        count = self.blocks if isinstance(self.blocks, int) else len(self.blocks)
        bound = 0
        if self.kind in ("rows", "global_blocks"):
            bound += min(count, g.nq) * g.nk
        if self.kind in ("columns", "global_blocks"):
            bound += g.nq * min(count, g.nk)
        return bound

    def _text(self):
        return f"{self.kind}({_fmt_blocks(self.blocks)})"


@dataclass(frozen=True, repr=False)
class Random(Pattern):
    """Each query block gets exactly min(per_row, nk) distinct key blocks, drawn uniformly;
    deterministic for a given (seed, nq, nk) and the same for every head."""

    per_row: int
    seed: int = 0

    def keys(self, g):
        k = min(self.per_row, g.nk)
        if k == 0:
            return np.zeros(0, np.int64)
        rng = np.random.default_rng([self.seed, g.nq, g.nk])
        if k <= 32 and 4 * k <= g.nk:
            # Floyd's algorithm, vectorised over rows: O(nq * k^2) work, no nq x nk array.
            chosen = np.empty((g.nq, k), dtype=np.int64)
            for s, t in enumerate(range(g.nk - k, g.nk)):
                r = rng.integers(0, t + 1, size=g.nq)
                taken = (chosen[:, :s] == r[:, None]).any(axis=1)
                chosen[:, s] = np.where(taken, t, r)
        elif 2 * k <= g.nk:
            chosen = _distinct_draws(rng, g.nq, g.nk, k)
        else:
            # At least half of each row is kept, so a per-row random permutation prefix costs
            # at most 2x nnz; rows go in chunks to bound memory.
            chosen = np.empty((g.nq, k), dtype=np.int64)
            step = max(1, (1 << 22) // g.nk)
            for r0 in range(0, g.nq, step):
                r1 = min(g.nq, r0 + step)
                u = rng.random((r1 - r0, g.nk))
                chosen[r0:r1] = np.argpartition(u, k - 1, axis=1)[:, :k] if k < g.nk else np.arange(g.nk)
        chosen.sort(axis=1)
        return (np.arange(g.nq, dtype=np.int64)[:, None] * g.nk + chosen).ravel()

    def max_nnz(self, g):
        return g.nq * min(self.per_row, g.nk)

    def _text(self):
        return f"random({self.per_row})" if self.seed == 0 else f"random({self.per_row}, seed={self.seed})"


@dataclass(frozen=True, repr=False)
class Butterfly(Pattern):
    """Flat block butterfly (Pixelated Butterfly, Dao et al.): keep (i, j) iff i XOR j is 0
    or 2**t for some t < factors; ``factors=None`` means ceil(log2(max(nq, nk)))."""

    factors: Optional[int] = None

    def keys(self, g):
        # Levels past ceil(log2(max(nq, nk))) add nothing (i XOR j stays below that power of
        # two), so clamp: a large ``factors`` must not build a huge offset list.
        levels = max(0, math.ceil(math.log2(max(g.nq, g.nk))))
        f = levels if self.factors is None else min(self.factors, levels)
        offsets = np.array([0] + [1 << t for t in range(f)], dtype=np.int64)
        j = np.arange(g.nq, dtype=np.int64)[:, None] ^ offsets[None, :]  # [nq, f + 1]
        j = np.where(j < g.nk, j, np.iinfo(np.int64).max)
        j.sort(axis=1)
        keys = np.arange(g.nq, dtype=np.int64)[:, None] * g.nk + j
        return keys[j != np.iinfo(np.int64).max]

    def max_nnz(self, g):
        levels = max(0, math.ceil(math.log2(max(g.nq, g.nk))))
        return g.nq * (1 + (levels if self.factors is None else min(self.factors, levels)))

    def _text(self):
        return "butterfly()" if self.factors is None else f"butterfly({self.factors})"


@dataclass(frozen=True, repr=False)
class Fixed(Pattern):
    """Sparse Transformer "fixed": keep (i, j) iff i // stride == j // stride, or
    j mod stride >= stride - summary."""

    stride: int
    summary: int = 1

    def keys(self, g):
        i = np.arange(g.nq, dtype=np.int64)
        start = (i // self.stride) * self.stride
        block = _progressions(g, start, 1, np.minimum(start + self.stride, g.nk) - start)
        j = np.arange(g.nk, dtype=np.int64)
        summary_cols = j[j % self.stride >= self.stride - self.summary]
        return _union(block, _columns_keys(g, summary_cols))

    def max_nnz(self, g):
        summary_cols = min(g.nk, -(-g.nk // self.stride) * self.summary)
        return g.nq * (min(self.stride, g.nk) + summary_cols)

    def _text(self):
        return f"fixed({self.stride})" if self.summary == 1 else f"fixed({self.stride}, summary={self.summary})"


@dataclass(frozen=True, repr=False)
class BigBird(Pattern):
    """BigBird: local(window) | global_blocks(globals) | random(random, seed)."""

    window: int = 1
    globals: _U[int, Tuple[int, ...]] = 1
    random: int = 1
    seed: int = 0

    def expand(self) -> Pattern:
        return Or(Or(local(self.window), global_blocks(self.globals)), Random(self.random, self.seed))

    def keys(self, g):
        return self.expand().keys(g)

    def max_nnz(self, g):
        return self.expand().max_nnz(g)

    def _text(self):
        return (f"bigbird(window={self.window}, globals={_fmt_blocks(self.globals)}, "
                f"random={self.random}, seed={self.seed})")


@dataclass(frozen=True, repr=False)
class Longformer(Pattern):
    """Longformer: local(window) | global_blocks(globals)."""

    window: int = 1
    globals: _U[int, Tuple[int, ...]] = 1

    def expand(self) -> Pattern:
        return Or(local(self.window), global_blocks(self.globals))

    def keys(self, g):
        return self.expand().keys(g)

    def max_nnz(self, g):
        return self.expand().max_nnz(g)

    def _text(self):
        return f"longformer(window={self.window}, globals={_fmt_blocks(self.globals)})"


@dataclass(frozen=True, repr=False, eq=False)
class FromMask(Pattern):
    """A custom bool block mask of shape (nq, nk) or (H, nq, nk)."""

    shape: Tuple[int, ...]
    data: bytes  # packed bits of the bool mask
    digest: str = field(default="")

    def mask(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return np.unpackbits(np.frombuffer(self.data, np.uint8), count=n).astype(bool).reshape(self.shape)

    def keys(self, g):
        # A mask smaller than the grid is placed at its bottom-right corner: a layout for
        # seq_len != kv_len is evaluated on the square grid of absolute blocks, and its query
        # and key blocks are the grid's last ones (bottom-right alignment), so the mask of
        # the call's own (nq, nk) blocks lands where the call's blocks are.
        a, b = self.shape[-2:]
        if a > g.nq or b > g.nk or (a != g.nq and b != g.nk):
            raise ValueError(f"from_mask: mask shape {self.shape} does not fit the block grid "
                             f"(nq, nk) = {(g.nq, g.nk)}; expected (nq, nk) or (num_heads, nq, nk), "
                             f"or the call's own blocks (bottom-right corner) for seq_len != kv_len")
        m = self.mask()
        heads = [m] if m.ndim == 2 else list(m)
        if m.ndim == 3 and m.shape[0] != g.num_heads:
            raise ValueError(f"from_mask: mask has {m.shape[0]} heads but num_heads={g.num_heads}")
        keys = []
        for mh in heads:
            i, j = np.nonzero(mh)
            keys.append((i + g.nq - a).astype(np.int64) * g.nk + (j + g.nk - b))
        return keys[0] if m.ndim == 2 else tuple(keys)

    @property
    def num_heads(self):
        return self.shape[0] if len(self.shape) == 3 else None

    def __eq__(self, other):
        return isinstance(other, FromMask) and self.shape == other.shape and self.data == other.data

    def __hash__(self):
        return hash((self.shape, self.digest))

    def _text(self):
        return f"from_mask(<{'x'.join(map(str, self.shape))} mask {self.digest[:12]}>)"


@dataclass(frozen=True, repr=False)
class FromFn(Pattern):
    """``fn(i, j)`` on broadcast integer arrays returns the bool block mask."""

    fn: Callable

    def keys(self, g):
        i = np.arange(g.nq, dtype=np.int64)[:, None]
        j = np.arange(g.nk, dtype=np.int64)[None, :]
        out = np.asarray(self.fn(i, j))
        if out.dtype != bool:
            raise ValueError(f"from_fn: fn must return a bool array, got dtype {out.dtype}")
        try:
            out = np.broadcast_to(out, (g.nq, g.nk))
        except ValueError:
            raise ValueError(f"from_fn: fn returned shape {out.shape}, which does not broadcast to "
                             f"the block grid (nq, nk) = {(g.nq, g.nk)}") from None
        return np.flatnonzero(out).astype(np.int64)

    def _text(self):
        return f"from_fn(<{getattr(self.fn, '__name__', 'fn')}>)"


@dataclass(frozen=True, repr=False)
class PerHead(Pattern):
    """Head h uses patterns[h]."""

    patterns: Tuple[Pattern, ...]

    @property
    def num_heads(self):
        return len(self.patterns)

    def keys(self, g):
        if len(self.patterns) != g.num_heads:
            raise ValueError(f"per_head: got {len(self.patterns)} patterns but num_heads={g.num_heads}")
        return tuple(p.keys(g) for p in self.patterns)

    def max_nnz(self, g):
        return sum(p.max_nnz(g) for p in self.patterns)

    def _text(self):
        return "per_head(" + ", ".join(str(p) for p in self.patterns) + ")"

    def _operands(self):
        return self.patterns


# ---------------------------------------------------------------------------- operators
def _head_reduce(parts, fn) -> HeadKeys:
    """``fn`` over a list of key arrays, per head when any part is per-head."""
    widths = {len(k) for k in parts if isinstance(k, tuple)}
    if not widths:
        return fn(parts)
    if len(widths) > 1:
        raise ValueError(f"per_head patterns with {' and '.join(map(str, sorted(widths)))} heads "
                         "cannot be combined")
    (n,) = widths
    per = [k if isinstance(k, tuple) else (k,) * n for k in parts]
    return tuple(fn([k[h] for k in per]) for h in range(n))


def _union_all(parts) -> Keys:
    if len(parts) == 2:
        return _union(*parts)
    return np.unique(np.concatenate(parts))  # one sort over all terms, not one merge per term


def _intersect_all(parts) -> Keys:
    out = parts[0]
    for k in sorted(parts[1:], key=len):  # smallest first: the running result only shrinks
        out = _intersect(out, k)
    return out


def _operands_max_nnz(node: Pattern, operands, g: Grid) -> int:
    """Sum of the operands' bounds (the key merges concatenate their operands), a shared
    operand counted once per head when ``node`` is per-head (it is broadcast to every head)."""
    heads = node.num_heads
    return sum(p.max_nnz(g) * (heads if heads and p.num_heads is None else 1) for p in operands)


@dataclass(frozen=True, repr=False)
class _Binary(Pattern):
    left: Pattern
    right: Pattern
    _OP = "?"

    def _operands(self):
        return (self.left, self.right)

    @property
    def num_heads(self):
        return self.left.num_heads or self.right.num_heads

    def max_nnz(self, g):
        return _operands_max_nnz(self, (self.left, self.right), g)

    def _text(self):
        lt, rt = str(self.left), str(self.right)
        if self.left._PREC < self._PREC:
            lt = f"({lt})"
        if self.right._PREC <= self._PREC:  # left-associative: a right operand of equal rank needs parens
            rt = f"({rt})"
        return f"{lt} {self._OP} {rt}"


@dataclass(frozen=True, repr=False, init=False)
class _Chain(Pattern):
    """An associative operator over two or more terms, kept flat: ``(a | b) | c`` and
    ``a | (b | c)`` are both ``Or(a, b, c)``. A chain built in a Python loop is then one level
    deep, so keys, hash, == and str (which all walk the tree) never recurse along it."""

    terms: Tuple[Pattern, ...]
    _OP = "?"

    def _operands(self):
        return self.terms

    def __init__(self, *terms: Pattern):
        flat = []
        for t in terms:
            flat.extend(t.terms if type(t) is type(self) else (t,))
        if len(flat) < 2:
            raise PatternError(f"{type(self).__name__} needs at least two terms, got {len(flat)}")
        object.__setattr__(self, "terms", tuple(flat))
        # the text extends the first term's when that is a chain of this operator (a chain
        # built in a loop, p = p | x): O(new terms), not O(all terms), per step
        base = terms[0] if type(terms[0]) is type(self) else None
        new = flat[len(base.terms):] if base is not None else flat
        known = [] if base is None else [base._str]
        if all(t is not None for t in known) and all(t._str is not None for t in new):
            parts = known + [f"({t})" if t._PREC <= self._PREC else str(t) for t in new]
            if sum(map(len, parts)) <= _MAX_KEPT_TEXT:
                object.__setattr__(self, "_str", f" {self._OP} ".join(parts))
                return
        object.__setattr__(self, "_str", None)

    @property
    def num_heads(self):
        return next((t.num_heads for t in self.terms if t.num_heads is not None), None)

    def max_nnz(self, g):
        return _operands_max_nnz(self, self.terms, g)

    def _text(self):
        # Terms are never of this same operator (they were flattened), so only looser ones
        # need parentheses.
        return f" {self._OP} ".join(f"({t})" if t._PREC <= self._PREC else str(t)
                                    for t in self.terms)


# Precedence follows Python's: ~ binds tightest, then -, then &, then |.
@dataclass(frozen=True, repr=False, init=False)
class Or(_Chain):
    """Union: keep (i, j) iff any term keeps it."""

    _OP, _PREC = "|", 1

    def keys(self, g):
        return _head_reduce([t.keys(g) for t in self.terms], _union_all)


@dataclass(frozen=True, repr=False, init=False)
class And(_Chain):
    """Intersection: keep (i, j) iff every term keeps it."""

    _OP, _PREC = "&", 2

    def keys(self, g):
        return _head_reduce([t.keys(g) for t in self.terms], _intersect_all)


@dataclass(frozen=True, repr=False)
class Sub(_Binary):
    _OP, _PREC = "-", 3

    def keys(self, g):
        return _head_reduce([self.left.keys(g), self.right.keys(g)], lambda parts: _difference(*parts))


@dataclass(frozen=True, repr=False)
class Not(Pattern):
    operand: Pattern
    _PREC = 4

    def _operands(self):
        return (self.operand,)

    @property
    def num_heads(self):
        return self.operand.num_heads

    def keys(self, g):
        k = self.operand.keys(g)
        return tuple(_complement(x, g) for x in k) if isinstance(k, tuple) else _complement(k, g)

    def max_nnz(self, g):
        return self.operand.max_nnz(g) + g.nq * g.nk * (self.num_heads or 1)

    def _text(self):
        t = str(self.operand)
        return f"~({t})" if self.operand._PREC < self._PREC else f"~{t}"


# ---------------------------------------------------------------------------- factories
def dense() -> Pattern:
    """Every block: keep every (i, j)."""
    return Dense()


def local(window: int) -> Pattern:
    """Sliding window in blocks: keep (i, j) iff |i - j| <= window."""
    return Dilated(_check_int("window", window, 0), 1, "local")


def strided(stride: int) -> Pattern:
    """Keep (i, j) iff (i - j) mod stride == 0."""
    return Dilated(None, _check_int("stride", stride, 1), "strided")


def dilated(window: int, dilation: int) -> Pattern:
    """Keep (i, j) iff |i - j| <= window * dilation and (i - j) mod dilation == 0."""
    return Dilated(_check_int("window", window, 0), _check_int("dilation", dilation, 1), "dilated")


def rows(blocks: Blocks) -> Pattern:
    """Those query blocks see every key block. An int n means blocks 0..min(n, nq)-1; a list
    names block indices (negative ones count from the end)."""
    return Rows(_norm_blocks("blocks", blocks), "rows")


def columns(blocks: Blocks) -> Pattern:
    """Every query block sees those key blocks (int n: the first n; list: indices, negative
    from the end)."""
    return Rows(_norm_blocks("blocks", blocks), "columns")


def global_blocks(blocks: Blocks) -> Pattern:
    """``rows(blocks) | columns(blocks)``: global tokens in both directions."""
    return Rows(_norm_blocks("blocks", blocks), "global_blocks")


def random(per_row: int, seed: int = 0) -> Pattern:
    """Each query block attends exactly min(per_row, nk) distinct, uniformly drawn key blocks."""
    return Random(_check_int("per_row", per_row, 0), _check_int("seed", seed, 0))


def butterfly(factors: Optional[int] = None) -> Pattern:
    """Flat block butterfly: keep (i, j) iff i XOR j is 0 or 2**t with t < factors."""
    return Butterfly(None if factors is None else _check_int("factors", factors, 0))


def fixed(stride: int, summary: int = 1) -> Pattern:
    """Sparse Transformer "fixed": same stride-aligned chunk, or the last ``summary`` blocks
    of every chunk."""
    stride = _check_int("stride", stride, 1)
    summary = _check_int("summary", summary, 0)
    if summary > stride:
        raise PatternError(f"summary must be <= stride ({stride}), got {summary}")
    return Fixed(stride, summary)


def bigbird(window: int = 1, globals: Blocks = 1, random: int = 1, seed: int = 0) -> Pattern:
    """BigBird: ``local(window) | global_blocks(globals) | random(random, seed)``."""
    return BigBird(_check_int("window", window, 0), _norm_blocks("globals", globals),
                   _check_int("random", random, 0), _check_int("seed", seed, 0))


def longformer(window: int = 1, globals: Blocks = 1) -> Pattern:
    """Longformer: ``local(window) | global_blocks(globals)``."""
    return Longformer(_check_int("window", window, 0), _norm_blocks("globals", globals))


def from_mask(mask: ArrayLike) -> Pattern:
    """A custom bool block mask, shape (nq, nk) shared by all heads or (num_heads, nq, nk)."""
    try:
        import torch

        if isinstance(mask, torch.Tensor):
            mask = mask.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    m = np.asarray(mask)
    if m.dtype != bool:
        if not np.issubdtype(m.dtype, np.integer) or not np.isin(m, (0, 1)).all():
            raise ValueError(f"from_mask: mask must be a bool (or 0/1) array, got dtype {m.dtype}")
        m = m.astype(bool)
    if m.ndim not in (2, 3) or 0 in m.shape:
        raise ValueError(f"from_mask: mask must have shape (nq, nk) or (num_heads, nq, nk), got {m.shape}")
    data = np.packbits(m.ravel()).tobytes()
    return FromMask(tuple(int(s) for s in m.shape), data, hashlib.sha1(data).hexdigest())


def from_fn(fn: Callable) -> Pattern:
    """``fn(i, j)``, called once on broadcast int64 arrays of block indices, returns the bool mask."""
    if not callable(fn):
        raise TypeError(f"from_fn: fn must be callable, got {type(fn).__name__}")
    return FromFn(fn)


def per_head(*patterns: Pattern) -> Pattern:
    """Head h uses ``patterns[h]``; ``compile(..., num_heads=len(patterns))`` is required."""
    if len(patterns) == 1 and isinstance(patterns[0], (list, tuple)):
        patterns = tuple(patterns[0])
    if not patterns:
        raise PatternError("per_head needs at least one pattern")
    for p in patterns:
        if not isinstance(p, Pattern):
            raise TypeError(f"per_head: expected Pattern arguments, got {type(p).__name__}")
        if p.num_heads is not None:
            raise PatternError("per_head: nested per-head patterns are not allowed")
    return PerHead(tuple(patterns))
