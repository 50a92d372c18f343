"""Mask compiler: pattern -> BlockLayout (forward CSR, transposed CSR, full/partial split).

Time and memory are O(nnz + nq + nk) for primitives and their unions, intersections and
differences; ``dense()`` under a token window costs O(blocks inside the window). Results
are cached on (pattern, seq_len, kv_len, block_size, causal, num_heads, window).

The geometry (absolute positions, full/partial blocks) is the one specified in
:class:`~sparseflash.layout.BlockLayout`'s docstring. :func:`compile` builds a layout of one
sequence; :func:`compile_sequences` builds one over several (packed documents, or one table
per batch element for a key-padding mask) from per-sequence layouts.

Two limits keep a mistaken call (a dense pattern at a million tokens with small blocks) from
running for minutes and exhausting memory. Before any keys are built, ``compile`` bounds the
blocks the tables could hold with ``Pattern.max_nnz`` and refuses, with a ValueError naming
``seq_len`` and ``block_size``, when that bound passes the int32 index limit (2**31 - 1
entries) or its table bytes pass :data:`MAX_TABLE_BYTES`. The cache of compiled layouts holds
at most :data:`CACHE_MAX_ENTRIES` layouts and :data:`CACHE_MAX_BYTES` bytes of tables,
evicting the least recently used.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from .layout import (COL_OFF, ROW_OFF, TABLE_FIELDS, BlockLayout, K_LEN, K_POS, K_START, NK, NQ, Q_LEN,
                     Q_POS, Q_START, bottom_right, cdiv, seq_row)
from .parser import parse
from .pattern import Dense, FromFn, FromMask, Grid, Pattern, PerHead

__all__ = ["compile", "compile_cache_clear", "compile_cache_info", "compile_sequences",
           "with_key_padding", "check_window", "restrict", "CacheInfo", "MAX_TABLE_BYTES", "CACHE_MAX_BYTES",
           "CACHE_MAX_ENTRIES"]

_INT32_MAX = np.iinfo(np.int32).max

# Largest tables compile() builds, in bytes, as estimated before building them (module
# attributes, so they can be changed at run time: sparseflash.compiler.MAX_TABLE_BYTES = ...).
MAX_TABLE_BYTES = 8 << 30
# Bytes per stored block: its int32 entries in fwd_idx and bwd_idx (8), plus 4 of headroom
# for the larger scratch arrays compilation holds for a moment.
_BYTES_PER_BLOCK = 12
# Bytes per (table head, block row or column): int32 ptr and nfull, forward and backward.
_BYTES_PER_ROW = 8

CACHE_MAX_ENTRIES = 256
CACHE_MAX_BYTES = 512 << 20  # six dense causal 1M-token layouts are about 1.5 GiB


def _check_length(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a positive int (tokens), got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int (tokens), got {value}")
    return int(value)


def check_window(window_size) -> Optional[Tuple[int, int]]:
    """Normalise ``window_size``: None, or ``(left, right)`` ints >= -1 (-1: unbounded side).
    ``(-1, -1)`` is no window and returns None."""
    if window_size is None:
        return None
    if (not isinstance(window_size, (tuple, list)) or len(window_size) != 2
            or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) for w in window_size)):
        raise ValueError(f"window_size must be a pair of ints (left, right) in tokens, got {window_size!r}")
    left, right = int(window_size[0]), int(window_size[1])
    if left < -1 or right < -1:
        raise ValueError(f"window_size values must be >= 0, or -1 for an unbounded side, got {window_size!r}")
    return None if (left, right) == (-1, -1) else (left, right)


def compile(pattern: Pattern, seq_len: int, *, kv_len: Optional[int] = None, block_size: int = 128,
            causal: bool = False, num_heads: int = 1, window_size: Optional[Tuple[int, int]] = None,
            cache: bool = True) -> BlockLayout:
    """Compile ``pattern`` into the block tables of a :class:`~sparseflash.BlockLayout`.

    Args:
        pattern: a :class:`~sparseflash.Pattern` (``parse`` a string first).
        seq_len: query length in tokens.
        kv_len: key/value length in tokens (default ``seq_len``). Queries and keys are
            aligned bottom-right: with ``kv_len > seq_len`` query row i sits at absolute
            position ``i + kv_len - seq_len`` (a decode step, a prefill chunk), and the
            pattern is evaluated on the absolute block grid of the ``max(seq_len, kv_len)``
            tokens; see :class:`~sparseflash.BlockLayout`.
        block_size: tokens per block, a power of two in [16, 256].
        causal: token-level causal mask in absolute positions: query t sees key u iff
            ``u <= t`` (bottom-right aligned, as FlashAttention >= 2.1).
        num_heads: query heads; must equal the head count of a ``per_head`` pattern.
        window_size: ``(left, right)`` in tokens, flash-attn's convention (-1: unbounded):
            query t sees key u iff ``t - left <= u <= t + right``, ANDed with the pattern.
            Blocks wholly outside the window are not stored.
        cache: reuse the layout of an earlier identical call (the layout is immutable).
    """
    if not isinstance(pattern, Pattern):
        if isinstance(pattern, str):
            raise TypeError("pattern must be a Pattern; for text use sparseflash.parse(text) first")
        raise TypeError(f"pattern must be a sparseflash Pattern, got {type(pattern).__name__}")
    if _is_compiling():
        # torch.compile traces the caller: compile now, once, outside the trace; the trace
        # gets the tables as constant tensors (a layout with tables_on_device)
        tables, (meta, seqs) = _compile_at_trace_time(
            trace_value(pattern), seq_len, kv_len, block_size, causal, num_heads, window_size, cache)
        return BlockLayout(**dict(meta), seqs=seqs, **dict(tables))
    return _compile_checked(pattern, seq_len, kv_len, block_size, causal, num_heads, window_size, cache)


def _compile_checked(pattern: Pattern, seq_len, kv_len, block_size, causal, num_heads, window_size,
                     cache) -> BlockLayout:
    seq_len = _check_length("seq_len", seq_len)
    kv_len = seq_len if kv_len is None else _check_length("kv_len", kv_len)
    _check_block_size(block_size)
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"causal must be a bool, got {causal!r}")
    window = check_window(window_size)
    args = (pattern, seq_len, kv_len, int(block_size), bool(causal), int(num_heads), window)
    if cache:
        # a cached layout passed the checks below when it was built (a host-time cut: the size
        # bound walks the pattern tree at every call otherwise)
        hit = _CACHE.peek(args)
        if hit is not None:
            return hit
    _check_table_size(*args)
    if pattern.num_heads is not None and pattern.num_heads != num_heads:
        raise ValueError(f"num_heads={num_heads} but the pattern is per-head with {pattern.num_heads} heads")
    return _CACHE.build(args) if cache else _compile(*args)


try:
    from torch.compiler import assume_constant_result as _assume_constant_result
    from torch.compiler import is_dynamo_compiling as _is_compiling
except ImportError:  # pragma: no cover - the compiler itself needs only numpy
    def _is_compiling() -> bool:
        return False

    def _assume_constant_result(fn):
        return fn


def trace_value(pattern: Pattern):
    """``pattern`` as constants, for code torch.compile traces to pass to an
    ``assume_constant_result`` function, where :func:`from_trace_value` rebuilds it: its text,
    or, for a tree with a ``from_mask``/``from_fn`` leaf, nested tuples ``(type, *operands)``
    with leaves ``text``, ``(FromMask, shape, data, digest)`` and ``(FromFn, fn)``. Dynamo in
    torch 2.11 cannot pass a Pattern itself there (it converts arguments to constants, and
    "can't reconstruct arbitrary frozen dataclass instances"); 2.13 passes it by identity.
    Traced, this reads only the fields it returns, so the guards compare them by value (equal
    patterns share a graph), except a from_fn's function: a function is guarded by its code
    alone, so ``id`` guards the leaf object itself, which keeps its function."""
    if pattern.has_text_form:
        return str(pattern)
    if isinstance(pattern, FromMask):
        return FromMask, pattern.shape, pattern.data, pattern.digest
    if isinstance(pattern, FromFn):
        id(pattern)  # traced: an identity guard on the leaf
        return FromFn, pattern.fn
    return (type(pattern), *(trace_value(p) for p in pattern._operands()))


def from_trace_value(value) -> Pattern:
    """The pattern :func:`trace_value` gave ``value`` for (an equal one)."""
    if isinstance(value, str):
        return parse(value)
    kind, *args = value
    if kind is FromMask or kind is FromFn:
        return kind(*args)
    operands = [from_trace_value(v) for v in args]
    return kind(tuple(operands)) if kind is PerHead else kind(*operands)


@_assume_constant_result
def _compile_at_trace_time(source, *args) -> tuple:
    """:func:`compile` inside a function torch.compile traces: it runs at trace time, outside
    the trace, and returns the layout's tables as CPU int32 tensors (constants of the graph)
    and its host metadata as constants: ``((name, table), ...), (((name, value), ...), seqs
    rows)``. The Pattern arrives as its :func:`trace_value` (constants; the object there is
    dynamo's stand-in)."""
    import torch

    layout = _compile_checked(from_trace_value(source), *args)
    tables = tuple((name, torch.from_numpy(np.array(getattr(layout, name)))) for name in TABLE_FIELDS)
    meta = tuple((name, getattr(layout, name)) for name in
                 ("seq_len", "kv_len", "block_size", "causal", "num_heads", "table_heads", "window", "packed"))
    return tables, (meta, tuple(tuple(int(x) for x in row) for row in layout.seqs))


def _check_table_size(pattern: Pattern, seq_len: int, kv_len: int, block_size: int,
                      causal: bool, num_heads: int, window=None) -> None:
    """Refuse, before any keys are built, a layout whose tables could pass the int32 index
    limit or :data:`MAX_TABLE_BYTES`. O(size of the pattern tree). The pattern's grid is the
    square grid of absolute blocks (BlockLayout's docstring); ``dense()`` under a window
    builds only its band."""
    nq = nk = -(-max(seq_len, kv_len) // block_size)
    try:
        table_heads = num_heads if pattern.num_heads is not None else 1
        blocks = pattern.max_nnz(Grid(nq, nk, num_heads))
        lo, hi = _offset_bounds(causal, window)
        if isinstance(pattern, Dense) and lo is not None and hi is not None:
            blocks = min(blocks, nq * ((hi - lo) // block_size + 2))
    except RecursionError:
        raise ValueError("pattern is nested too deeply to compile; build long chains with "
                         "| or & (they stay flat), not deeply nested - or ~") from None
    table_bytes = blocks * _BYTES_PER_BLOCK + table_heads * (nq + nk) * _BYTES_PER_ROW
    if blocks <= _INT32_MAX and table_bytes <= MAX_TABLE_BYTES:
        return
    where = (f"seq_len={seq_len}" + (f", kv_len={kv_len}" if kv_len != seq_len else "")
             + f" and block_size={block_size} give a {nq:,} x {nk:,} block grid"
             + (f" x {table_heads} heads" if table_heads > 1 else ""))
    if blocks > _INT32_MAX:
        limit = f"more than the {_INT32_MAX:,} entries int32 tables can index"
    else:
        limit = (f"{table_bytes / 2**30:.1f} GiB of tables, more than "
                 f"sparseflash.compiler.MAX_TABLE_BYTES = {MAX_TABLE_BYTES / 2**30:.1f} GiB")
    raise ValueError(f"{where}; this pattern may store up to {blocks:,} blocks, {limit}. "
                     f"Use a larger block_size, a shorter seq_len or a sparser pattern.")


class CacheInfo(NamedTuple):
    """Statistics of the compile cache; ``bytes`` is the table bytes it holds."""

    hits: int
    misses: int
    maxsize: int
    currsize: int
    bytes: int
    max_bytes: int


def _layout_bytes(layout: BlockLayout) -> int:
    return sum(getattr(layout, name).nbytes for name in TABLE_FIELDS)


class _LayoutCache:
    """LRU of compiled layouts bounded by entry count and by the bytes of their tables
    (:data:`CACHE_MAX_ENTRIES`, :data:`CACHE_MAX_BYTES`, read at each insertion). A layout
    larger than the whole byte budget is returned but not kept."""

    def __init__(self):
        self._entries: "OrderedDict[Tuple, Tuple[BlockLayout, int]]" = OrderedDict()
        self._bytes = self._hits = self._misses = 0
        self._lock = threading.Lock()

    def peek(self, key: Tuple) -> Optional[BlockLayout]:
        """The cached layout of ``key`` (counted as a hit), or None without compiling."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return hit[0]

    def build(self, key: Tuple) -> BlockLayout:
        """Compile ``key`` (counted as a miss; after a :meth:`peek` that found nothing) and keep
        the layout within the cache's bounds."""
        with self._lock:
            self._misses += 1
        layout = _compile(*key)  # outside the lock: another thread may compile meanwhile
        size = _layout_bytes(layout)
        with self._lock:
            if key not in self._entries and size <= CACHE_MAX_BYTES:
                self._entries[key] = (layout, size)
                self._bytes += size
            while self._entries and (len(self._entries) > CACHE_MAX_ENTRIES
                                     or self._bytes > CACHE_MAX_BYTES):
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= evicted
        return layout

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = self._hits = self._misses = 0

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, CACHE_MAX_ENTRIES, len(self._entries),
                             self._bytes, CACHE_MAX_BYTES)


_CACHE = _LayoutCache()


def _check_block_size(block_size) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or not (
            16 <= block_size <= 256 and block_size & (block_size - 1) == 0):
        raise ValueError(f"block_size must be a power of two in [16, 256], got {block_size!r}")


def compile_cache_clear() -> None:
    """Empty the compile cache and reset its statistics."""
    _CACHE.clear()


def compile_cache_info() -> CacheInfo:
    """``CacheInfo(hits, misses, maxsize, currsize, bytes, max_bytes)`` of the compile cache."""
    return _CACHE.info()


# ----------------------------------------------------------------------------- one sequence
def _offset_bounds(causal: bool, window) -> Tuple[Optional[int], Optional[int]]:
    """Bounds on ``u - t`` (key minus query position) that the causal mask and the window
    allow; None where unbounded."""
    lo = hi = None
    if window is not None:
        left, right = window
        lo = -left if left >= 0 else None
        hi = right if right >= 0 else None
    if causal:
        hi = 0 if hi is None else min(hi, 0)
    return lo, hi


def _band_keys(nq_abs: int, nk_abs: int, rows: range, bs: int, lo, hi) -> np.ndarray:
    """Keys ``I * nk_abs + J`` of the blocks a dense pattern keeps under the offset bounds,
    for absolute rows ``rows``: O(blocks in the band)."""
    I = np.arange(rows.start, rows.stop, dtype=np.int64)                       # [rows]
    j_lo = np.zeros_like(I) if lo is None else np.maximum(0, (I * bs + lo - bs + 1 + bs - 1) // bs)
    j_hi = np.full_like(I, nk_abs - 1) if hi is None else np.minimum(nk_abs - 1, ((I + 1) * bs - 1 + hi) // bs)
    count = np.maximum(j_hi - j_lo + 1, 0)
    first = np.repeat(I * nk_abs + j_lo, count)
    pos = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    return first + pos


def _pattern_blocks(pattern: Pattern, q_len: int, k_len: int, q_pos: int, k_pos: int,
                    bs: int, causal: bool, num_heads: int, window):
    """The pattern's blocks on the sequence's absolute grid: ``(head or None, I, J,
    table_heads)``, int64, sorted by (head, I, J)."""
    nq = cdiv(q_pos + q_len, bs) - q_pos // bs
    nk = cdiv(k_pos + k_len, bs) - k_pos // bs
    frame = max(q_pos + q_len, k_pos + k_len)
    n_abs = cdiv(frame, bs)                       # the pattern's square grid, absolute blocks
    lo, hi = _offset_bounds(causal, window)
    if isinstance(pattern, FromMask) and tuple(pattern.shape[-2:]) not in ((n_abs, n_abs), (nq, nk)):
        raise ValueError(f"from_mask: mask shape {pattern.shape} does not fit this call: expected the "
                         f"absolute block grid ({n_abs}, {n_abs}) or the call's own blocks ({nq}, {nk}) "
                         f"(with or without a leading num_heads axis)")
    if isinstance(pattern, Dense) and (lo is not None or hi is not None):
        keys = _band_keys(n_abs, n_abs, range(q_pos // bs, q_pos // bs + nq), bs, lo, hi)
    else:
        keys = pattern.keys(Grid(n_abs, n_abs, num_heads))
    if isinstance(keys, tuple):                   # one table per head
        if len(keys) != num_heads:
            raise ValueError(f"pattern produced {len(keys)} heads but num_heads={num_heads}")
        head = np.repeat(np.arange(num_heads, dtype=np.int64), [k.size for k in keys])
        keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        table_heads = num_heads
    else:
        head, table_heads = None, 1
    if keys.size > _INT32_MAX:
        raise ValueError(f"layout has {keys.size} stored blocks; the int32 tables hold at most {_INT32_MAX}")
    I, J = np.divmod(keys, n_abs)                                              # [nnz]
    return head, I, J, table_heads


def _sequence_blocks(head, I, J, q_len: int, k_len: int, q_pos: int, k_pos: int, bs: int,
                     causal: bool, window):
    """The stored blocks of one sequence from candidate absolute blocks ``(head, I, J)``
    (sorted by head, I, J): ``(row, col, full)`` with local ``row = head * nq + i`` and
    column ``j``, following the rules of BlockLayout's docstring."""
    _, _, _, _, _, _, _, _, nq, nk = seq_row(0, q_len, 0, k_len, q_pos, k_pos, 0, 0, bs)
    i0, j0 = q_pos // bs, k_pos // bs
    lo, hi = _offset_bounds(causal, window)
    inside = (I >= i0) & (I < i0 + nq) & (J >= j0) & (J < j0 + nk)
    if not inside.all():
        I, J = I[inside], J[inside]
        head = head[inside] if head is not None else None
    i, j = I - i0, J - j0

    # Per-row and per-column token extents (positions), then the rectangle tests per block.
    rI = np.arange(i0, i0 + nq, dtype=np.int64)                               # [nq]
    cJ = np.arange(j0, j0 + nk, dtype=np.int64)                               # [nk]
    q_lo, q_hi = np.maximum(rI * bs, q_pos), np.minimum((rI + 1) * bs, q_pos + q_len) - 1
    k_lo, k_hi = np.maximum(cJ * bs, k_pos), np.minimum((cJ + 1) * bs, k_pos + k_len) - 1
    q_whole = (q_hi - q_lo + 1) == bs
    k_whole = (k_hi - k_lo + 1) == bs
    full = q_whole[i] & k_whole[j]
    if lo is not None or hi is not None:
        d_min = k_lo[j] - q_hi[i]                     # smallest u - t over the rectangle
        d_max = k_hi[j] - q_lo[i]
        visible = np.ones(i.size, dtype=bool)
        if hi is not None:
            visible &= d_min <= hi
            full &= d_max <= hi
        if lo is not None:
            visible &= d_max >= lo
            full &= d_min >= lo
        if not visible.all():
            i, j, full = i[visible], j[visible], full[visible]
            head = head[visible] if head is not None else None
    row = i if head is None else head * nq + i
    return row, j, full


def _csr_tables(row: np.ndarray, col: np.ndarray, full: np.ndarray, nrows: int, nq: int,
                nk: int, table_heads: int):
    """Forward and transposed CSR of one sequence from its blocks (rows ascending, columns
    ascending within a row): full blocks first in every row and column."""
    partial = ~full
    any_partial = bool(partial.any())
    # Forward CSR: the stable sort only reorders rows whose partial blocks precede full ones.
    if any_partial:
        order_key = (row * 2 + partial) * nk + col
        if not (order_key[1:] >= order_key[:-1]).all():
            order = np.argsort(order_key, kind="stable")
            row, col, partial = row[order], col[order], partial[order]
    fwd_ptr = np.zeros(nrows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=nrows), out=fwd_ptr[1:])
    fwd_nfull = np.bincount(row[~partial], minlength=nrows) if any_partial else np.diff(fwd_ptr)

    # Backward CSR: a counting sort by (table head, column, partial) that keeps row order,
    # done by scipy's O(nnz) CSR->CSC conversion.          buckets: [table_heads * nk * 2]
    col32 = col.astype(np.int32)
    if table_heads > 1:
        bucket = ((row // nq).astype(np.int32) * nk + col32) * 2 + partial
    else:
        bucket = col32 * 2 + partial
    ncols = table_heads * nk
    index_dtype = np.int32 if max(nrows, 2 * ncols, row.size) < _INT32_MAX else np.int64
    csr = sp.csr_matrix((np.ones(row.size, dtype=np.int8), bucket.astype(index_dtype, copy=False),
                         fwd_ptr.astype(index_dtype)), shape=(nrows, ncols * 2))
    csc = csr.tocsc()
    bwd_ptr = csc.indptr[::2]
    bwd_nfull = np.diff(csc.indptr)[::2]
    bwd_idx = csc.indices
    if table_heads > 1:
        bwd_idx = bwd_idx % nq
    return dict(fwd_ptr=fwd_ptr, fwd_idx=col32, fwd_nfull=fwd_nfull,
                bwd_ptr=bwd_ptr, bwd_idx=bwd_idx, bwd_nfull=bwd_nfull)


def _compile(pattern: Pattern, seq_len: int, kv_len: int, block_size: int, causal: bool,
             num_heads: int, window=None) -> BlockLayout:
    t0 = time.perf_counter()
    q_pos, k_pos = bottom_right(seq_len, kv_len)
    head, I, J, table_heads = _pattern_blocks(pattern, seq_len, kv_len, q_pos, k_pos, block_size,
                                              causal, num_heads, window)
    return _layout_of(head, I, J, table_heads, seq_len, kv_len, q_pos, k_pos, block_size,
                      causal, num_heads, window, t0)


def _layout_of(head, I, J, table_heads, seq_len, kv_len, q_pos, k_pos, block_size, causal,
               num_heads, window, t0) -> BlockLayout:
    row, col, full = _sequence_blocks(head, I, J, seq_len, kv_len, q_pos, k_pos, block_size,
                                      causal, window)
    seq = seq_row(0, seq_len, 0, kv_len, q_pos, k_pos, 0, 0, block_size)
    nq, nk = seq[NQ], seq[NK]
    tables = _csr_tables(row, col, full, table_heads * nq, nq, nk, table_heads)
    return BlockLayout(seq_len=seq_len, kv_len=kv_len, block_size=block_size, causal=causal,
                       num_heads=num_heads, table_heads=table_heads, window=window,
                       seqs=np.array([seq], dtype=np.int64),
                       compile_ms=(time.perf_counter() - t0) * 1e3, **tables)


def restrict(layout: BlockLayout, seq_len: int, kv_len: int) -> BlockLayout:
    """The layout of a call of ``seq_len`` queries against ``kv_len`` keys (aligned
    bottom-right) that uses ``layout``'s blocks at their absolute positions: its rows for
    the call's queries, cut to the call's keys, with full/partial recomputed for the call.
    ``layout`` is a one-sequence layout whose positions cover the call's (a layout compiled
    for a whole sequence serves its decode steps and prefill chunks). O(stored blocks)."""
    t0 = time.perf_counter()
    if layout.num_seqs != 1 or layout.packed:
        raise ValueError("pattern: only a layout of one sequence can serve a shorter call")
    bs = layout.block_size
    s = layout.seqs[0]
    lq_pos, lk_pos = int(s[Q_POS]), int(s[K_POS])
    q_pos, k_pos = bottom_right(seq_len, kv_len)
    if not (lk_pos == k_pos == 0 and kv_len <= layout.kv_len and lq_pos // bs <= q_pos // bs):
        raise ValueError(f"pattern: the layout (seq_len={layout.seq_len}, kv_len={layout.kv_len}) does "
                         f"not cover a call with seq_len={seq_len}, kv_len={kv_len}")
    head, I, J = absolute_blocks(layout)
    return _layout_of(head, I, J, layout.table_heads, seq_len, kv_len, q_pos, k_pos, bs,
                      layout.causal, layout.num_heads, layout.window, t0)


# ----------------------------------------------------------------------------- several sequences
def _fwd_blocks(layout: BlockLayout):
    """A one-sequence layout's blocks as ``(row, col, full)`` in forward-table order."""
    counts = np.diff(layout.fwd_ptr.astype(np.int64))
    row = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    pos = np.arange(row.size, dtype=np.int64) - layout.fwd_ptr[:-1].astype(np.int64)[row]
    full = pos < layout.fwd_nfull[row]
    col = layout.fwd_idx.astype(np.int64)
    order = np.lexsort((col, row))                 # rows ascending, columns ascending
    return row[order], col[order], full[order]


def absolute_blocks(layout: BlockLayout):
    """A one-sequence layout's stored blocks as ``(head or None, I, J)`` in absolute block
    indices, sorted by (head, I, J): what :func:`_layout_of` takes back."""
    row, col, _ = _fwd_blocks(layout)
    s = layout.seqs[0]
    nq, bs = layout.num_q_blocks, layout.block_size
    head = row // nq if layout.table_heads > 1 else None
    return head, row % nq + int(s[Q_POS]) // bs, col + int(s[K_POS]) // bs


def key_block_status(valid: np.ndarray, k_pos: int, bs: int) -> np.ndarray:
    """Per local key block of a sequence whose keys start at position ``k_pos``: 0 when no
    key is valid, 1 when some are, 2 when all are (``valid``: bool ``[k_len]``)."""
    k_len = valid.size
    lead = k_pos % bs
    nk = cdiv(lead + k_len, bs)
    padded = np.zeros(nk * bs, dtype=np.int8)      # absent keys count as not valid
    padded[lead:lead + k_len] = valid
    per_block = padded.reshape(nk, bs).sum(1)      # [nk]
    return np.where(per_block == bs, 2, np.where(per_block > 0, 1, 0)).astype(np.int8)


def _with_padding(layout: BlockLayout, status: np.ndarray) -> dict:
    """One sequence's tables with the blocks of no valid key dropped and the partly padded
    ones made partial (``status`` from :func:`key_block_status`)."""
    row, col, full = _fwd_blocks(layout)
    keep = status[col] > 0
    row, col, full = row[keep], col[keep], full[keep] & (status[col[keep]] == 2)
    nq, nk, th = layout.num_q_blocks, layout.num_kv_blocks, layout.table_heads
    return _csr_tables(row, col, full, th * nq, nq, nk, th)


def _concatenated_tables(parts: List[dict]) -> dict:
    """Several sequences' tables (each with its own final pointer) one after another: each
    sequence's pointers shifted by the entries before it and one final entry appended."""
    entries, shifted = 0, []
    for tables in parts:
        tables = dict(tables)
        tables["fwd_ptr"] = tables["fwd_ptr"][:-1].astype(np.int64) + entries
        tables["bwd_ptr"] = tables["bwd_ptr"][:-1].astype(np.int64) + entries
        entries += int(tables["fwd_idx"].size)
        shifted.append(tables)
    if entries > _INT32_MAX:
        raise ValueError(f"layout has {entries} stored blocks; the int32 tables hold at most {_INT32_MAX}")
    cat = {name: np.concatenate([t[name] for t in shifted]) for name in TABLE_FIELDS}
    cat["fwd_ptr"] = np.append(cat["fwd_ptr"], entries)
    cat["bwd_ptr"] = np.append(cat["bwd_ptr"], entries)
    return cat


def with_key_padding(layout: BlockLayout, key_padding_mask: np.ndarray) -> BlockLayout:
    """``layout`` (one sequence) as one table set per batch element of ``key_padding_mask``
    (bool ``[batch, kv_len]``, True = the key may be attended): each element's tables drop
    the blocks with no valid key and make partly padded blocks partial. The layout's
    positions are kept, wherever its queries sit against its keys (a context-parallel
    rank's buffer puts them mid-way). O(batch x stored blocks)."""
    t0 = time.perf_counter()
    if layout.num_seqs != 1 or layout.packed:
        raise ValueError("key_padding_mask: only a layout of one sequence takes a key-padding mask "
                         "this way (packed documents: compile_sequences)")
    mask = np.asarray(key_padding_mask)
    if mask.dtype != bool or mask.ndim != 2 or mask.shape[0] == 0 or mask.shape[1] != layout.kv_len:
        raise ValueError(f"key_padding_mask must be a bool array of shape (batch, kv_len = "
                         f"{layout.kv_len}), got {mask.dtype} {mask.shape}")
    base = layout.seqs[0]
    th, nq, nk = layout.table_heads, int(base[NQ]), int(base[NK])
    parts, seqs = [], []
    for b in range(mask.shape[0]):
        parts.append(_with_padding(layout, key_block_status(mask[b], int(base[K_POS]), layout.block_size)))
        row = base.copy()
        row[ROW_OFF], row[COL_OFF] = b * th * nq, b * th * nk
        seqs.append(row)
    cat = _concatenated_tables(parts)
    return BlockLayout(seq_len=layout.seq_len, kv_len=layout.kv_len, block_size=layout.block_size,
                       causal=layout.causal, num_heads=layout.num_heads, table_heads=th,
                       window=layout.window, seqs=np.array(seqs, dtype=np.int64), packed=False,
                       key_padding_mask=mask, compile_ms=(time.perf_counter() - t0) * 1e3, **cat)


def compile_sequences(pattern: Pattern, q_lens: Sequence[int], k_lens: Sequence[int], *,
                      block_size: int, causal: bool, num_heads: int, window=None,
                      packed: bool, key_padding_mask: Optional[np.ndarray] = None) -> BlockLayout:
    """A layout over several sequences: packed documents (``packed``: sequence s is the s-th
    segment of one batch row, lengths ``q_lens[s]``/``k_lens[s]``) or one table per batch
    element (sequence s is batch element s, all of the same lengths). Each sequence is its
    own bottom-right aligned sequence: pattern, blocks and causal line start at its first
    token. ``key_padding_mask`` (bool ``[batch, total kv]``) drops the blocks with no valid
    key and makes partly padded blocks partial. Per-sequence layouts come from the compile
    cache, so equal lengths compile once; assembling is O(total stored blocks)."""
    t0 = time.perf_counter()
    q_lens, k_lens = [int(x) for x in q_lens], [int(x) for x in k_lens]
    if not packed and key_padding_mask is not None and q_lens[0] and k_lens[0]:
        one = pattern if isinstance(pattern, BlockLayout) else compile(
            pattern, q_lens[0], kv_len=k_lens[0], block_size=block_size, causal=causal,
            num_heads=num_heads, window_size=window)
        return with_key_padding(one, key_padding_mask)
    parts: List[dict] = []
    seqs = []
    q_start = k_start = row_off = col_off = 0
    table_heads = None
    for s, (q_len, k_len) in enumerate(zip(q_lens, k_lens)):
        q_pos, k_pos = bottom_right(q_len, k_len)
        row = seq_row(q_start if packed else 0, q_len, k_start if packed else 0, k_len,
                      q_pos, k_pos, row_off, col_off, block_size)
        if q_len == 0 or k_len == 0:              # an empty document: no rows or no keys
            th = table_heads or (pattern.table_heads if isinstance(pattern, BlockLayout)
                                 else num_heads if pattern.num_heads is not None else 1)
            empty = np.zeros(0, np.int64)
            tables = dict(fwd_ptr=np.zeros(th * row[NQ] + 1, np.int64), fwd_idx=empty,
                          fwd_nfull=np.zeros(th * row[NQ], np.int64),
                          bwd_ptr=np.zeros(th * row[NK] + 1, np.int64), bwd_idx=empty,
                          bwd_nfull=np.zeros(th * row[NK], np.int64))
        else:
            one = pattern if isinstance(pattern, BlockLayout) else compile(
                pattern, q_len, kv_len=k_len, block_size=block_size, causal=causal,
                num_heads=num_heads, window_size=window)
            th = one.table_heads
            if key_padding_mask is not None:
                valid = (key_padding_mask[0, k_start:k_start + k_len] if packed
                         else key_padding_mask[s])
                tables = _with_padding(one, key_block_status(valid, k_pos, block_size))
            else:
                tables = {name: getattr(one, name) for name in TABLE_FIELDS}
        table_heads = th if table_heads is None else table_heads
        parts.append(tables)
        seqs.append(row)
        row_off += th * row[NQ]
        col_off += th * row[NK]
        q_start += q_len
        k_start += k_len
    cat = _concatenated_tables(parts)
    seq_len = q_start if packed else q_lens[0]
    kv_len = k_start if packed else k_lens[0]
    return BlockLayout(seq_len=seq_len, kv_len=kv_len, block_size=block_size, causal=causal,
                       num_heads=num_heads, table_heads=table_heads or 1, window=window,
                       seqs=np.array(seqs, dtype=np.int64), packed=packed,
                       key_padding_mask=key_padding_mask,
                       compile_ms=(time.perf_counter() - t0) * 1e3, **cat)


# ----------------------------------------------------------------------------- prefix stability
_STABLE_LEAVES = ("Dense", "Dilated", "Fixed")


def prefix_stable(pattern: Pattern) -> bool:
    """True when whether block (I, J) is kept never depends on the grid's size (for blocks
    inside it): then the layout of a longer sequence, cut at a shorter one, is that shorter
    sequence's layout, and a decode loop can use one layout compiled for a capacity. Random
    draws, butterfly levels, negative (from-the-end) block indices, masks and functions
    depend on the grid, so they are not."""
    import dataclasses

    todo = [pattern]
    while todo:
        p = todo.pop()
        name = type(p).__name__
        if name in _STABLE_LEAVES:
            continue
        if name == "Rows":
            blocks = p.blocks
            if isinstance(blocks, tuple) and any(b < 0 for b in blocks):
                return False
            continue
        if name == "Longformer":
            todo.append(p.expand())
            continue
        children = []
        for f in dataclasses.fields(p) if dataclasses.is_dataclass(p) else ():
            value = getattr(p, f.name)
            if isinstance(value, Pattern):
                children.append(value)
            elif isinstance(value, tuple) and value and all(isinstance(x, Pattern) for x in value):
                children.extend(value)
        if not children or name in ("Random", "Butterfly", "BigBird", "FromMask", "FromFn"):
            return False
        todo.extend(children)
    return True
