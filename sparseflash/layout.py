"""BlockLayout: the compiled block-index tables every other stage consumes.

The table format is specified once, in :class:`BlockLayout`'s docstring.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

__all__ = ["BlockLayout", "LayoutTensors"]


@dataclass(frozen=True)
class LayoutTensors:
    """The tables of a :class:`BlockLayout` as int32 torch tensors on one device.

    Field names and meanings are exactly those of :class:`BlockLayout`.
    """

    fwd_ptr: "object"
    fwd_idx: "object"
    fwd_nfull: "object"
    bwd_ptr: "object"
    bwd_idx: "object"
    bwd_nfull: "object"


class BlockLayout:
    r"""Block-sparse attention layout: which (query block, key block) pairs are computed.

    Produced by :func:`sparseflash.compile`; immutable (its arrays are read-only).

    **Grid.** Tokens are grouped into blocks of ``block_size``. There are
    ``nq = ceil(seq_len / block_size)`` query blocks and ``nk = ceil(kv_len / block_size)``
    key blocks. Query block ``i`` covers tokens ``[i*block_size, min((i+1)*block_size, seq_len))``.

    **Token-level mask.** Query token ``t`` may attend key token ``s`` iff

    * block ``(t // block_size, s // block_size)`` is in the table of t's head, and
    * ``t < seq_len`` and ``s < kv_len``, and
    * if ``causal``: ``s <= t + (kv_len - seq_len)`` (bottom-right aligned, as FlashAttention >= 2.1).

    **Full and partial blocks.** A stored block is *full* when every token pair in its
    rectangle passes the two length tests and the causal test, so a kernel may skip
    element masking there. It is *partial* when it has at least one visible pair and at
    least one masked-out pair (it is crossed by the causal line or cut by a length).
    Blocks with no visible pair at all are never stored.

    **Heads.** ``table_heads`` is 1 when every head shares one pattern, else ``num_heads``.
    Head ``h`` uses table head ``th = h if table_heads > 1 else 0``.

    **Forward tables (CSR over query blocks)**, one row per (table head, query block),
    row ``r = th * nq + i``:

    * ``fwd_ptr``   int32 ``[table_heads * nq + 1]``: row r's entries are
      ``fwd_idx[fwd_ptr[r] : fwd_ptr[r + 1]]``.
    * ``fwd_idx``   int32 ``[nnz_stored]``: key-block indices. Within a row the first
      ``fwd_nfull[r]`` entries are the full blocks, ascending; the rest are the partial
      blocks, ascending.
    * ``fwd_nfull`` int32 ``[table_heads * nq]``.

    **Backward tables (CSR over key blocks, the transpose)**, row ``c = th * nk + j``:
    ``bwd_ptr`` int32 ``[table_heads * nk + 1]``, ``bwd_idx`` int32 (query-block indices,
    full ones first, each part ascending), ``bwd_nfull`` int32 ``[table_heads * nk]``.

    A row with no entries is allowed (an empty query block produces zeros).

    **Rebuilding the dense mask**::

        dense = np.zeros((table_heads, nq, nk), bool)
        for th in range(table_heads):
            for i in range(nq):
                r = th * nq + i
                dense[th, i, fwd_idx[fwd_ptr[r]:fwd_ptr[r + 1]]] = True
        # full blocks of row r: fwd_idx[fwd_ptr[r] : fwd_ptr[r] + fwd_nfull[r]]
        # broadcast to (num_heads, nq, nk) when table_heads == 1

    ``to_dense()`` does exactly this. ``nnz`` counts computed block pairs over all
    ``num_heads`` heads (a shared table counts once per head), and
    ``density = nnz / (num_heads * nq * nk)``.
    """

    __slots__ = (
        "seq_len", "kv_len", "block_size", "causal", "num_heads", "table_heads",
        "num_q_blocks", "num_kv_blocks",
        "fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull",
        "compile_ms", "_device_cache", "__weakref__",
    )

    def __init__(self, *, seq_len: int, kv_len: int, block_size: int, causal: bool,
                 num_heads: int, table_heads: int,
                 fwd_ptr: np.ndarray, fwd_idx: np.ndarray, fwd_nfull: np.ndarray,
                 bwd_ptr: np.ndarray, bwd_idx: np.ndarray, bwd_nfull: np.ndarray,
                 compile_ms: float = float("nan")):
        self.seq_len = int(seq_len)
        self.kv_len = int(kv_len)
        self.block_size = int(block_size)
        self.causal = bool(causal)
        self.num_heads = int(num_heads)
        self.table_heads = int(table_heads)
        self.num_q_blocks = -(-self.seq_len // self.block_size)
        self.num_kv_blocks = -(-self.kv_len // self.block_size)
        for name, arr in (("fwd_ptr", fwd_ptr), ("fwd_idx", fwd_idx), ("fwd_nfull", fwd_nfull),
                          ("bwd_ptr", bwd_ptr), ("bwd_idx", bwd_idx), ("bwd_nfull", bwd_nfull)):
            arr = np.ascontiguousarray(arr, dtype=np.int32)
            arr.setflags(write=False)
            setattr(self, name, arr)
        self.compile_ms = compile_ms
        self._device_cache: Dict[str, LayoutTensors] = {}
        assert self.fwd_ptr.shape == (self.table_heads * self.num_q_blocks + 1,)
        assert self.bwd_ptr.shape == (self.table_heads * self.num_kv_blocks + 1,)
        assert self.fwd_idx.shape == self.bwd_idx.shape

    # ------------------------------------------------------------------ summary
    @property
    def shape(self) -> Tuple[int, int, int]:
        """(num_heads, nq, nk) of the block grid."""
        return (self.num_heads, self.num_q_blocks, self.num_kv_blocks)

    @property
    def nnz(self) -> int:
        """Computed block pairs, summed over all ``num_heads`` heads."""
        return int(self.fwd_idx.size) * (self.num_heads // self.table_heads)

    @property
    def num_full(self) -> int:
        """Full (unmasked) computed block pairs, summed over all heads."""
        return int(self.fwd_nfull.sum(dtype=np.int64)) * (self.num_heads // self.table_heads)

    @property
    def num_partial(self) -> int:
        return self.nnz - self.num_full

    @property
    def density(self) -> float:
        """nnz / (num_heads * nq * nk)."""
        return self.nnz / float(self.num_heads * self.num_q_blocks * self.num_kv_blocks)

    @property
    def max_row_blocks(self) -> int:
        """Largest number of key blocks any query block visits."""
        return int(np.diff(self.fwd_ptr).max(initial=0))

    @property
    def max_col_blocks(self) -> int:
        """Largest number of query blocks any key block is visited by."""
        return int(np.diff(self.bwd_ptr).max(initial=0))

    def row_counts(self) -> np.ndarray:
        """Key blocks per query block, int64 ``[num_heads, nq]``."""
        c = np.diff(self.fwd_ptr).astype(np.int64).reshape(self.table_heads, self.num_q_blocks)
        return np.broadcast_to(c, (self.num_heads, self.num_q_blocks))

    # ------------------------------------------------------------------ dense views
    def to_dense(self, kind: str = "any") -> np.ndarray:
        """Bool array ``[num_heads, nq, nk]`` of computed blocks.

        ``kind`` selects ``"any"`` (every computed block), ``"full"`` or ``"partial"``.
        """
        if kind not in ("any", "full", "partial"):
            raise ValueError(f"kind must be 'any', 'full' or 'partial', got {kind!r}")
        nq, nk, th = self.num_q_blocks, self.num_kv_blocks, self.table_heads
        rows = np.repeat(np.arange(th * nq, dtype=np.int64), np.diff(self.fwd_ptr))
        if kind != "any":
            pos = np.arange(self.fwd_idx.size, dtype=np.int64) - self.fwd_ptr[:-1].astype(np.int64)[rows]
            is_full = pos < self.fwd_nfull[rows]
            keep = is_full if kind == "full" else ~is_full
        else:
            keep = slice(None)
        dense = np.zeros((th * nq, nk), dtype=bool)
        dense[rows[keep], self.fwd_idx[keep]] = True
        dense = dense.reshape(th, nq, nk)
        return np.broadcast_to(dense, (self.num_heads, nq, nk)).copy() if th != self.num_heads else dense

    def to_token_mask(self, head: int = 0) -> np.ndarray:
        """Bool ``[seq_len, kv_len]`` token-level mask of one head (for tests; O(N^2))."""
        blocks = self.to_dense()[head]
        bs = self.block_size
        m = np.repeat(np.repeat(blocks, bs, 0), bs, 1)[: self.seq_len, : self.kv_len]
        if self.causal:
            t = np.arange(self.seq_len)[:, None]
            s = np.arange(self.kv_len)[None, :]
            m = m & (s <= t + (self.kv_len - self.seq_len))
        return m

    # ------------------------------------------------------------------ devices
    def to(self, device) -> LayoutTensors:
        """The tables as int32 torch tensors on ``device``, moved once and cached."""
        import torch

        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        cached = self._device_cache.get(key)
        if cached is None:
            cached = LayoutTensors(**{
                name: torch.from_numpy(np.array(getattr(self, name))).to(device)
                for name in ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull")
            })
            self._device_cache[key] = cached
        return cached

    # ------------------------------------------------------------------ display
    def to_string(self, width: int = 64, head: int = 0) -> str:
        """ASCII map of one head, downsampled to at most ``width`` columns."""
        from .visualize import layout_to_string

        return layout_to_string(self, width=width, head=head)

    def describe(self) -> str:
        return (f"BlockLayout(seq_len={self.seq_len}, kv_len={self.kv_len}, block_size={self.block_size}, "
                f"causal={self.causal}, num_heads={self.num_heads}, grid={self.num_q_blocks}x{self.num_kv_blocks}, "
                f"nnz={self.nnz}, full={self.num_full}, partial={self.num_partial}, density={self.density:.4f})")

    __repr__ = describe

    def __setattr__(self, name, value):
        if hasattr(self, "_device_cache") and name != "_device_cache":
            raise AttributeError("BlockLayout is immutable")
        object.__setattr__(self, name, value)
