"""Mask compiler: pattern -> BlockLayout (forward CSR, transposed CSR, full/partial split).

Time and memory are O(nnz + nq + nk) for primitives and their unions, intersections and
differences; results are cached on (pattern, seq_len, kv_len, block_size, causal, num_heads).

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
from typing import NamedTuple, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from .layout import BlockLayout
from .pattern import Grid, Pattern

__all__ = ["compile", "compile_cache_clear", "compile_cache_info", "CacheInfo",
           "MAX_TABLE_BYTES", "CACHE_MAX_BYTES", "CACHE_MAX_ENTRIES"]

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


def compile(pattern: Pattern, seq_len: int, *, kv_len: Optional[int] = None, block_size: int = 128,
            causal: bool = False, num_heads: int = 1, cache: bool = True) -> BlockLayout:
    """Compile ``pattern`` into the block tables of a :class:`~sparseflash.BlockLayout`.

    Args:
        pattern: a :class:`~sparseflash.Pattern` (``parse`` a string first).
        seq_len: query length in tokens; ``nq = ceil(seq_len / block_size)``.
        kv_len: key/value length in tokens (default ``seq_len``); ``nk = ceil(kv_len / block_size)``.
        block_size: tokens per block, a power of two in [16, 256].
        causal: token-level causal mask, bottom-right aligned: query t sees key s iff
            ``s <= t + kv_len - seq_len``. With ``kv_len < seq_len`` the first query rows see
            nothing and produce zeros.
        num_heads: query heads; must equal the head count of a ``per_head`` pattern.
        cache: reuse the layout of an earlier identical call (the layout is immutable).
    """
    if not isinstance(pattern, Pattern):
        if isinstance(pattern, str):
            raise TypeError("pattern must be a Pattern; for text use sparseflash.parse(text) first")
        raise TypeError(f"pattern must be a sparseflash Pattern, got {type(pattern).__name__}")
    seq_len = _check_length("seq_len", seq_len)
    kv_len = seq_len if kv_len is None else _check_length("kv_len", kv_len)
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or not (
            16 <= block_size <= 256 and block_size & (block_size - 1) == 0):
        raise ValueError(f"block_size must be a power of two in [16, 256], got {block_size!r}")
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"causal must be a bool, got {causal!r}")
    args = (pattern, seq_len, kv_len, int(block_size), bool(causal), int(num_heads))
    _check_table_size(*args)
    if pattern.num_heads is not None and pattern.num_heads != num_heads:
        raise ValueError(f"num_heads={num_heads} but the pattern is per-head with {pattern.num_heads} heads")
    return _CACHE.get(args) if cache else _compile(*args)


def _check_table_size(pattern: Pattern, seq_len: int, kv_len: int, block_size: int,
                      causal: bool, num_heads: int) -> None:
    """Refuse, before any keys are built, a layout whose tables could pass the int32 index
    limit or :data:`MAX_TABLE_BYTES`. O(size of the pattern tree)."""
    nq, nk = -(-seq_len // block_size), -(-kv_len // block_size)
    try:
        table_heads = num_heads if pattern.num_heads is not None else 1
        blocks = pattern.max_nnz(Grid(nq, nk, num_heads))
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
    return sum(getattr(layout, name).nbytes for name in
               ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull"))


class _LayoutCache:
    """LRU of compiled layouts bounded by entry count and by the bytes of their tables
    (:data:`CACHE_MAX_ENTRIES`, :data:`CACHE_MAX_BYTES`, read at each insertion). A layout
    larger than the whole byte budget is returned but not kept."""

    def __init__(self):
        self._entries: "OrderedDict[Tuple, Tuple[BlockLayout, int]]" = OrderedDict()
        self._bytes = self._hits = self._misses = 0
        self._lock = threading.Lock()

    def get(self, key: Tuple) -> BlockLayout:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return hit[0]
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


def compile_cache_clear() -> None:
    """Empty the compile cache and reset its statistics."""
    _CACHE.clear()


def compile_cache_info() -> CacheInfo:
    """``CacheInfo(hits, misses, maxsize, currsize, bytes, max_bytes)`` of the compile cache."""
    return _CACHE.info()


def _compile(pattern: Pattern, seq_len: int, kv_len: int, block_size: int, causal: bool,
             num_heads: int) -> BlockLayout:
    t0 = time.perf_counter()
    nq, nk = -(-seq_len // block_size), -(-kv_len // block_size)
    keys = pattern.keys(Grid(nq, nk, num_heads))
    if isinstance(keys, tuple):  # one table per head
        if len(keys) != num_heads:
            raise ValueError(f"pattern produced {len(keys)} heads but num_heads={num_heads}")
        table_heads = num_heads
        sizes = [k.size for k in keys]
        offsets = np.repeat(np.arange(num_heads, dtype=np.int64) * (nq * nk), sizes)
        keys = np.concatenate(keys) + offsets if keys else np.zeros(0, np.int64)
    else:
        table_heads = 1
    if keys.size > _INT32_MAX:
        raise ValueError(f"layout has {keys.size} stored blocks; the int32 tables hold at most {_INT32_MAX}")

    # Split keys = (th * nq + i) * nk + j into global row and column.       # [nnz]
    if nk & (nk - 1) == 0:  # a power of two: shift and mask instead of int64 division
        shift = nk.bit_length() - 1
        row, col = keys >> shift, keys & (nk - 1)
    else:
        row = keys // nk
        col = row * nk
        np.subtract(keys, col, out=col)
    i = row % nq if table_heads > 1 else row

    # Token-rectangle tests: a block is visible if any pair passes, full if all pairs pass.
    # Without causal only the last row / column can be cut by a length, so most of this is
    # skipped in the common case.
    full = np.ones(row.size, dtype=bool)
    if seq_len % block_size:
        full &= i != nq - 1
    if kv_len % block_size:
        full &= col != nk - 1
    if causal:
        shift = kv_len - seq_len
        q_lo, q_hi = i * block_size, np.minimum((i + 1) * block_size, seq_len) - 1
        k_lo, k_hi = col * block_size, np.minimum((col + 1) * block_size, kv_len) - 1
        full &= k_hi <= q_lo + shift
        visible = k_lo <= q_hi + shift
        if not visible.all():
            row, col, full = row[visible], col[visible], full[visible]
    partial = ~full
    any_partial = bool(partial.any())

    # Forward CSR: rows in order, full blocks first within a row.  The stable sort only
    # reorders rows whose partial blocks precede full ones (rare: causal/length cuts put
    # partial blocks last), and timsort runs in O(n) on the already-sorted stretches.
    if any_partial:
        order_key = (row * 2 + partial) * nk + col
        if not (order_key[1:] >= order_key[:-1]).all():
            order = np.argsort(order_key, kind="stable")
            row, col, partial = row[order], col[order], partial[order]
    nrows = table_heads * nq
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

    layout = BlockLayout(
        seq_len=seq_len, kv_len=kv_len, block_size=block_size, causal=causal,
        num_heads=num_heads, table_heads=table_heads,
        fwd_ptr=fwd_ptr, fwd_idx=col32, fwd_nfull=fwd_nfull,
        bwd_ptr=bwd_ptr, bwd_idx=bwd_idx, bwd_nfull=bwd_nfull,
        compile_ms=(time.perf_counter() - t0) * 1e3,
    )
    return layout

