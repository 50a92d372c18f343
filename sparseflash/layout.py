"""BlockLayout: the compiled block-index tables every other stage consumes.

The table format is specified once, in :class:`BlockLayout`'s docstring.
"""
from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

__all__ = ["BlockLayout", "LayoutTensors", "SEQ_FIELDS", "TABLE_FIELDS"]

# Columns of ``BlockLayout.seqs`` (one row per sequence), in this order.
SEQ_FIELDS = ("q_start", "q_len", "k_start", "k_len", "q_pos", "k_pos",
              "row_off", "col_off", "nq", "nk")
Q_START, Q_LEN, K_START, K_LEN, Q_POS, K_POS, ROW_OFF, COL_OFF, NQ, NK = range(len(SEQ_FIELDS))


# Keys of BlockLayout._device_cache beside the devices: a device-built layout's seqs tensor
# and its host copy (tuples, so no device argument of to() can meet them).
_SEQS_KEY, _HOST_KEY = ("seqs",), ("host",)
# The six table fields of a layout (the class docstring specifies them), in this order.
TABLE_FIELDS = ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull")
# Host layouts alive, by serial (a string never reused): code that torch.compile traces names
# a host layout by its serial, a constant, where a function run at trace time finds it
# (attention._static_tables). A string, since dynamo may make an int input symbolic. Weak:
# an entry goes with its layout.
_LIVE_HOST_LAYOUTS: "weakref.WeakValueDictionary[str, BlockLayout]" = weakref.WeakValueDictionary()
_SERIALS = itertools.count(1)


def _compiling() -> bool:
    import torch

    return torch.compiler.is_compiling()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def bottom_right(q_len: int, k_len: int) -> Tuple[int, int]:
    """(q_pos, k_pos): absolute positions of the first query and key when the two sequences
    end together (the causal mask's alignment); the longer one starts at position 0."""
    frame = max(q_len, k_len)
    return frame - q_len, frame - k_len


def seq_row(q_start: int, q_len: int, k_start: int, k_len: int, q_pos: int, k_pos: int,
            row_off: int, col_off: int, block_size: int) -> Tuple[int, ...]:
    """One row of ``BlockLayout.seqs`` (nq and nk follow from the positions)."""
    nq = cdiv(q_pos + q_len, block_size) - q_pos // block_size if q_len else 0
    nk = cdiv(k_pos + k_len, block_size) - k_pos // block_size if k_len else 0
    return (q_start, q_len, k_start, k_len, q_pos, k_pos, row_off, col_off, nq, nk)


@dataclass(frozen=True)
class LayoutTensors:
    """The tables of a :class:`BlockLayout` as int32 torch tensors on one device.

    Field names and meanings are exactly those of :class:`BlockLayout`. ``plans`` is the one
    cache of what the kernels' launchers work out per call shape on these tables (launch
    orders, launch plans); it lives and dies with the layout.
    """

    fwd_ptr: "object"
    fwd_idx: "object"
    fwd_nfull: "object"
    bwd_ptr: "object"
    bwd_idx: "object"
    bwd_nfull: "object"
    seqs: "object"
    plans: dict = field(default_factory=dict, compare=False, repr=False)


def _tracing() -> bool:
    """Whether torch.compile traces the caller (a layout built inside a compiled function)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return torch.compiler.is_dynamo_compiling()      # False where real code runs


def _is_tensor(x) -> bool:
    if isinstance(x, np.ndarray):
        return False
    try:        # torch stays optional here: only a table built on a device is a tensor
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, torch.Tensor)


class BlockLayout:
    r"""Block-sparse attention layout: which (query block, key block) pairs are computed.

    Produced by :func:`sparseflash.compile` (one sequence shared by the batch) and by
    :func:`sparseflash.attention.resolve_layout` for packed documents and padded batches;
    immutable (its arrays are read-only).

    **Sequences.** A layout describes ``num_seqs`` sequences, one row each in ``seqs``
    (int64 ``[num_seqs, 10]``, columns :data:`SEQ_FIELDS`)::

        q_start q_len k_start k_len q_pos k_pos row_off col_off nq nk

    * ``num_seqs == 1``: one sequence, shared by every batch element (``packed`` False).
    * ``packed`` True: documents packed into one batch row (``cu_seqlens``): sequence s is
      query rows ``[q_start, q_start + q_len)`` and key rows ``[k_start, k_start + k_len)``
      of the tensors' sequence axis.
    * ``packed`` False and ``num_seqs > 1``: sequence s is batch element s (its own tables,
      e.g. for a key-padding mask); ``q_start = k_start = 0``.

    **Absolute positions.** Query row ``q_start + i`` sits at position ``t = q_pos + i`` of
    its sequence, key row ``k_start + j`` at ``u = k_pos + j``. The default is bottom-right
    alignment (:func:`bottom_right`): the queries and keys end together, as the causal mask
    aligns them, so with ``kv_len >= seq_len`` query row i is at ``i + kv_len - seq_len``
    (a decode step or a chunk of a prefill sits where it belongs) and with ``kv_len <
    seq_len`` (cross-attention) key row j is at ``j + seq_len - kv_len``. Patterns are
    evaluated on the square grid of absolute blocks of the sequence, ``ceil(frame / b)``
    blocks a side with ``frame = max(q_pos + q_len, k_pos + k_len)`` and ``b = block_size``:
    absolute block ``I`` covers positions ``[I*b, (I+1)*b)``.

    **Token-level mask.** Query position t may attend key position u of its sequence iff

    * block ``(t // b, u // b)`` is stored for t's head, and
    * if ``causal``: ``u <= t``, and
    * if ``window = (left, right)``: ``t - left <= u <= t + right`` (-1: unbounded side), and
    * the key is not padding (``key_padding_mask``, when the layout was built with one).

    Tokens of different sequences never attend each other.

    **Table rows are local.** Sequence s has ``nq`` query-block rows and ``nk`` key-block
    columns: local row ``i`` is absolute block ``q_pos // b + i`` and local column ``j`` is
    absolute block ``k_pos // b + j``. A block's *rectangle* is the b x b token pairs of
    those two absolute blocks; rows and columns outside the sequence's tokens are *absent*.

    **Full and partial blocks.** A stored block is *full* when no row or column of its
    rectangle is absent and every pair passes the causal, window and padding tests, so a
    kernel may skip element masking and bounds checks there. It is *partial* when it has at
    least one visible pair and at least one pair that is absent or masked out. Blocks with
    no visible pair at all are never stored.

    **Heads.** ``table_heads`` is 1 when every head shares one pattern, else ``num_heads``.
    Head ``h`` uses table head ``th = h if table_heads > 1 else 0``.

    **Forward tables (CSR over query blocks)**, row ``r = row_off + th * nq + i`` for
    sequence s's local row i (``row_off``, ``nq`` from s's row of ``seqs``):

    * ``fwd_ptr``   int32 ``[sum_s table_heads * nq + 1]``: row r's entries are
      ``fwd_idx[fwd_ptr[r] : fwd_ptr[r + 1]]``.
    * ``fwd_idx``   int32 ``[nnz_stored]``: local key-block indices j. Within a row the first
      ``fwd_nfull[r]`` entries are the full blocks, ascending; the rest are the partial
      blocks, ascending.
    * ``fwd_nfull`` int32 ``[sum_s table_heads * nq]``.

    **Backward tables (CSR over key blocks, the transpose)**, row ``c = col_off + th * nk +
    j``: ``bwd_ptr`` int32 ``[sum_s table_heads * nk + 1]``, ``bwd_idx`` int32 (local
    query-block indices, full ones first, each part ascending), ``bwd_nfull`` int32
    ``[sum_s table_heads * nk]``.

    A row with no entries is allowed (its queries see nothing: output 0, lse -inf).

    **Rebuilding the dense mask** of sequence s::

        q_start, q_len, k_start, k_len, q_pos, k_pos, row_off, col_off, nq, nk = seqs[s]
        dense = np.zeros((table_heads, nq, nk), bool)
        for th in range(table_heads):
            for i in range(nq):
                r = row_off + th * nq + i
                dense[th, i, fwd_idx[fwd_ptr[r]:fwd_ptr[r + 1]]] = True
        # full blocks of row r: fwd_idx[fwd_ptr[r] : fwd_ptr[r] + fwd_nfull[r]]
        # broadcast to (num_heads, nq, nk) when table_heads == 1

    ``to_dense(seq=s)`` does exactly this. ``nnz`` counts computed block pairs over all
    sequences and all ``num_heads`` heads (a shared table counts once per head), and
    ``density = nnz / (num_heads * sum_s nq * nk)``.

    ``seq_len``/``kv_len`` are the lengths of the tensors' sequence axes (the totals for
    packed documents); ``num_q_blocks``/``num_kv_blocks`` are sequence 0's ``nq``/``nk``.

    **Host-built and device-built layouts.** :func:`~sparseflash.compile` builds the tables
    as read-only numpy arrays (``on_device`` False, ``device`` None).
    :func:`~sparseflash.layout_from_block_mask` and :func:`~sparseflash.topk_layout` build
    them with tensor ops on their input's device, with no host sync (``on_device`` True,
    ``device`` that device; :meth:`from_tensors`). Their six table fields are int32 torch
    tensors on that device, and ``fwd_idx``/``bwd_idx`` have a **capacity tail**: they are
    ``[capacity]`` with ``capacity >= nnz_stored`` fixed by the shapes alone (so building
    needs no data-dependent size); entries past ``fwd_ptr[-1]`` (``bwd_ptr[-1]``) are unused, their values unspecified.
    Everything else (``seqs``, lengths, ``block_size``, ``causal``, ``window`` None,
    ``table_heads``, ``num_heads``) is host metadata computed from shapes. One sequence per
    batch element (``num_seqs == batch``, ``packed`` False), or ``num_seqs == 1`` shared by
    the batch. Queries that read table contents (``nnz``, ``num_full``, ``max_row_blocks``,
    ``row_counts``, ``to_dense``, ``to_token_mask``, ``to_string``, ``describe``,
    :func:`~sparseflash.estimate`) copy the tables to the host once (:meth:`host`, a sync);
    the kernels' launch path never reads them on the host.
    """

    __slots__ = (
        "seq_len", "kv_len", "block_size", "causal", "num_heads", "table_heads", "window",
        "packed", "seqs", "key_padding_mask", "num_q_blocks", "num_kv_blocks",
        *TABLE_FIELDS, "compile_ms", "_seq_rows", "_device_cache", "_serial", "__weakref__",
    )

    def __init__(self, *, seq_len: int, kv_len: int, block_size: int, causal: bool,
                 num_heads: int, table_heads: int,
                 fwd_ptr: np.ndarray, fwd_idx: np.ndarray, fwd_nfull: np.ndarray,
                 bwd_ptr: np.ndarray, bwd_idx: np.ndarray, bwd_nfull: np.ndarray,
                 seqs: Optional[np.ndarray] = None, packed: bool = False,
                 window: Optional[Tuple[int, int]] = None,
                 key_padding_mask: Optional[np.ndarray] = None,
                 compile_ms: float = float("nan")):
        self.seq_len = int(seq_len)
        self.kv_len = int(kv_len)
        self.block_size = int(block_size)
        self.causal = bool(causal)
        self.num_heads = int(num_heads)
        self.table_heads = int(table_heads)
        self.window = None if window is None else (int(window[0]), int(window[1]))
        self.packed = bool(packed)
        if seqs is None:
            seqs = (seq_row(0, self.seq_len, 0, self.kv_len, *bottom_right(self.seq_len, self.kv_len),
                            0, 0, self.block_size),)
        if _tracing():
            # inside a function torch.compile traces, numpy arrays are traced as tensors:
            # the host metadata stays Python ints (seqs given as rows of ints, or None)
            seqs = tuple(tuple(int(x) for x in row) for row in seqs)
            self._seq_rows = seqs
        else:
            seqs = np.ascontiguousarray(seqs, dtype=np.int64).reshape(-1, len(SEQ_FIELDS))
            seqs.setflags(write=False)
            # the rows as Python ints too: what torch.compile reads (a value, not an array)
            self._seq_rows = tuple(map(tuple, seqs.tolist()))
        self.seqs = seqs
        if key_padding_mask is not None:
            key_padding_mask = np.ascontiguousarray(key_padding_mask, dtype=bool)
            key_padding_mask.setflags(write=False)
        self.key_padding_mask = key_padding_mask
        self.num_q_blocks = self._seq_rows[0][NQ]
        self.num_kv_blocks = self._seq_rows[0][NK]
        tables = (("fwd_ptr", fwd_ptr), ("fwd_idx", fwd_idx), ("fwd_nfull", fwd_nfull),
                  ("bwd_ptr", bwd_ptr), ("bwd_idx", bwd_idx), ("bwd_nfull", bwd_nfull))
        on_device = _is_tensor(fwd_ptr)
        if on_device:
            import torch
        for name, arr in tables:
            if on_device:
                # tables built on a device (top-k, block masks): int32 tensors, kept as they
                # are; fwd_idx/bwd_idx may have an unused capacity tail past ptr[-1]
                assert _is_tensor(arr) and arr.dtype == torch.int32, (name, type(arr))
            else:
                arr = np.ascontiguousarray(arr, dtype=np.int32)
                arr.setflags(write=False)
            setattr(self, name, arr)
        self.compile_ms = compile_ms
        # device tables travel as themselves; a host layout by its serial (_LIVE_HOST_LAYOUTS)
        self._serial: Optional[str] = None if on_device or _tracing() else f"layout-{next(_SERIALS)}"
        self._device_cache: Dict[object, LayoutTensors] = {}             # set last: then immutable
        if self._serial is not None:
            _LIVE_HOST_LAYOUTS[self._serial] = self
        rows = sum(row[NQ] for row in self._seq_rows) * self.table_heads
        cols = sum(row[NK] for row in self._seq_rows) * self.table_heads
        assert tuple(self.fwd_ptr.shape) == (rows + 1,), (self.fwd_ptr.shape, rows)
        assert tuple(self.bwd_ptr.shape) == (cols + 1,), (self.bwd_ptr.shape, cols)
        assert on_device or self.fwd_idx.shape == self.bwd_idx.shape

    @classmethod
    def from_tensors(cls, *, seq_len: int, kv_len: int, block_size: int, causal: bool,
                     num_heads: int, table_heads: int, seq_rows, seqs_tensor,
                     fwd_ptr, fwd_idx, fwd_nfull, bwd_ptr, bwd_idx, bwd_nfull) -> "BlockLayout":
        """A device-built layout over contiguous int32 torch tables on one device (capacity
        tails allowed, see the class docstring). ``seq_rows``: the rows of ``seqs`` as tuples of Python ints
        (host metadata); ``seqs_tensor``: the same rows as an int32 tensor on the tables'
        device (what the kernels read).

        No checks and no work on the tables: it runs inside ``torch.compile(fullgraph=True)``,
        which builds the object through ``object.__setattr__`` as here (``__init__``'s numpy
        conversions and read-only flags do not trace)."""
        seqs = np.array(seq_rows, dtype=np.int64)
        if not _compiling():
            seqs.setflags(write=False)
        layout = object.__new__(cls)
        fields = dict(seq_len=seq_len, kv_len=kv_len, block_size=block_size, causal=causal,
                      num_heads=num_heads, table_heads=table_heads, window=None, packed=False,
                      seqs=seqs, key_padding_mask=None, num_q_blocks=seq_rows[0][NQ],
                      num_kv_blocks=seq_rows[0][NK], fwd_ptr=fwd_ptr, fwd_idx=fwd_idx,
                      fwd_nfull=fwd_nfull, bwd_ptr=bwd_ptr, bwd_idx=bwd_idx,
                      bwd_nfull=bwd_nfull, compile_ms=float("nan"),
                      _seq_rows=tuple(tuple(row) for row in seq_rows),
                      _device_cache={_SEQS_KEY: seqs_tensor}, _serial=None)
        for name, value in fields.items():
            object.__setattr__(layout, name, value)
        return layout

    def every_block_partial(self) -> "BlockLayout":
        """This device-built layout with every stored block partial (``fwd_nfull`` and
        ``bwd_nfull`` zero): the kernels then apply the token rules (causal, window, a
        key-padding mask) in every block. A device-built layout's full blocks were judged
        without a key-padding mask, and judging them again would read the tables on the host,
        so a padded call takes this instead (it costs the masked path on every block). Same
        tables otherwise (no copy); two zero tensors."""
        import torch

        if not self.on_device:
            raise ValueError("every_block_partial: a device-built layout's (a host layout drops and "
                             "marks padded blocks itself)")
        return BlockLayout.from_tensors(
            seq_len=self.seq_len, kv_len=self.kv_len, block_size=self.block_size, causal=self.causal,
            num_heads=self.num_heads, table_heads=self.table_heads, seq_rows=self._seq_rows,
            seqs_tensor=self._device_cache.get(_SEQS_KEY), fwd_ptr=self.fwd_ptr, fwd_idx=self.fwd_idx,
            fwd_nfull=torch.zeros_like(self.fwd_nfull), bwd_ptr=self.bwd_ptr, bwd_idx=self.bwd_idx,
            bwd_nfull=torch.zeros_like(self.bwd_nfull))

    @property
    def on_device(self) -> bool:
        """True for a device-built layout (torch tables, see the class docstring)."""
        return not isinstance(self.fwd_ptr, np.ndarray)

    @property
    def device(self):
        """The torch device of a device-built layout's tables; None for a host-built one."""
        return None if isinstance(self.fwd_ptr, np.ndarray) else self.fwd_ptr.device

    def host(self) -> "BlockLayout":
        """This layout with its tables as host numpy arrays, capacity tails cut (``self`` when
        host-built). A device-built layout copies once (a sync) and keeps the copy."""
        if not self.on_device:
            return self
        cached = self._device_cache.get(_HOST_KEY)
        if cached is None:
            nnz = int(self.fwd_ptr[-1])
            arrays = {name: getattr(self, name).cpu().numpy() for name in
                      ("fwd_ptr", "fwd_nfull", "bwd_ptr", "bwd_nfull")}
            arrays["fwd_idx"] = self.fwd_idx[:nnz].cpu().numpy()
            arrays["bwd_idx"] = self.bwd_idx[:nnz].cpu().numpy()
            cached = self._device_cache[_HOST_KEY] = BlockLayout(
                seq_len=self.seq_len, kv_len=self.kv_len, block_size=self.block_size,
                causal=self.causal, num_heads=self.num_heads, table_heads=self.table_heads,
                seqs=self.seqs, **arrays)
        return cached

    # ------------------------------------------------------------------ summary
    @property
    def tables_on_device(self) -> bool:
        """Alias of :attr:`on_device`: the six tables are torch tensors (built on a device,
        e.g. by ``topk_layout``); only their shapes and the host metadata are read on the
        host, and ``to(device)`` of their own device wraps them without a copy."""
        return self.on_device

    @property
    def num_seqs(self) -> int:
        return len(self._seq_rows)

    @property
    def shape(self) -> Tuple[int, int, int]:
        """(num_heads, nq, nk) of sequence 0's block grid."""
        return (self.num_heads, self.num_q_blocks, self.num_kv_blocks)

    @property
    def nnz(self) -> int:
        """Computed block pairs, summed over all sequences and all ``num_heads`` heads."""
        if self.on_device:
            return self.host().nnz
        return int(self.fwd_idx.size) * (self.num_heads // self.table_heads)

    @property
    def num_full(self) -> int:
        """Full (unmasked) computed block pairs, summed over all heads."""
        if self.on_device:
            return self.host().num_full
        return int(self.fwd_nfull.sum(dtype=np.int64)) * (self.num_heads // self.table_heads)

    @property
    def num_partial(self) -> int:
        return self.nnz - self.num_full

    @property
    def grid_blocks(self) -> int:
        """``num_heads * sum_s nq * nk``: the block pairs of every sequence's grid."""
        return self.num_heads * int((self.seqs[:, NQ] * self.seqs[:, NK]).sum())

    @property
    def density(self) -> float:
        """nnz / (num_heads * sum_s nq * nk)."""
        return self.nnz / float(max(self.grid_blocks, 1))

    @property
    def max_row_blocks(self) -> int:
        """Largest number of key blocks any query block visits."""
        if self.on_device:
            return self.host().max_row_blocks
        return int(np.diff(self.fwd_ptr).max(initial=0))

    @property
    def max_col_blocks(self) -> int:
        """Largest number of query blocks any key block is visited by."""
        if self.on_device:
            return self.host().max_col_blocks
        return int(np.diff(self.bwd_ptr).max(initial=0))

    def row_counts(self, seq: int = 0) -> np.ndarray:
        """Key blocks per query block of sequence ``seq``, int64 ``[num_heads, nq]``."""
        if self.on_device:
            return self.host().row_counts(seq)
        s = self._seq(seq)
        nq, off = int(s[NQ]), int(s[ROW_OFF])
        ptr = self.fwd_ptr[off:off + self.table_heads * nq + 1]
        c = np.diff(ptr).astype(np.int64).reshape(self.table_heads, nq)
        return np.broadcast_to(c, (self.num_heads, nq))

    def _seq(self, seq: int) -> np.ndarray:
        if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)) or not 0 <= seq < self.num_seqs:
            raise ValueError(f"seq must be an int in [0, {self.num_seqs}), got {seq!r}")
        return self.seqs[seq]

    # ------------------------------------------------------------------ dense views
    def to_dense(self, kind: str = "any", seq: int = 0) -> np.ndarray:
        """Bool array ``[num_heads, nq, nk]`` of sequence ``seq``'s computed blocks (local
        indices: row i is absolute query block ``q_pos // block_size + i``).

        ``kind`` selects ``"any"`` (every computed block), ``"full"`` or ``"partial"``.
        """
        if self.on_device:
            return self.host().to_dense(kind, seq)
        if kind not in ("any", "full", "partial"):
            raise ValueError(f"kind must be 'any', 'full' or 'partial', got {kind!r}")
        s = self._seq(seq)
        nq, nk, th, off = int(s[NQ]), int(s[NK]), self.table_heads, int(s[ROW_OFF])
        ptr = self.fwd_ptr[off:off + th * nq + 1].astype(np.int64)
        rows = np.repeat(np.arange(th * nq, dtype=np.int64), np.diff(ptr))
        entries = slice(int(ptr[0]), int(ptr[-1]))
        idx = self.fwd_idx[entries]
        if kind != "any":
            pos = np.arange(idx.size, dtype=np.int64) - (ptr[:-1] - ptr[0])[rows]
            is_full = pos < self.fwd_nfull[off:off + th * nq][rows]
            keep = is_full if kind == "full" else ~is_full
        else:
            keep = slice(None)
        dense = np.zeros((th * nq, nk), dtype=bool)
        dense[rows[keep], idx[keep]] = True
        dense = dense.reshape(th, nq, nk)
        return np.broadcast_to(dense, (self.num_heads, nq, nk)).copy() if th != self.num_heads else dense

    def to_token_mask(self, head: int = 0, seq: int = 0) -> np.ndarray:
        """Bool ``[q_len, k_len]`` token-level mask of one head of sequence ``seq`` (for tests;
        O(q_len * k_len)): the token rule of the class docstring, padding included."""
        s = self._seq(seq)
        q_len, k_len, q_pos, k_pos = int(s[Q_LEN]), int(s[K_LEN]), int(s[Q_POS]), int(s[K_POS])
        bs = self.block_size
        blocks = self.to_dense(seq=seq)[head]
        t = q_pos + np.arange(q_len)                                  # [q_len] positions
        u = k_pos + np.arange(k_len)                                  # [k_len]
        m = blocks[(t // bs - q_pos // bs)[:, None], (u // bs - k_pos // bs)[None, :]]
        if self.causal:
            m = m & (u[None, :] <= t[:, None])
        if self.window is not None:
            left, right = self.window
            if left >= 0:
                m = m & (u[None, :] >= t[:, None] - left)
            if right >= 0:
                m = m & (u[None, :] <= t[:, None] + right)
        if self.key_padding_mask is not None:
            if self.packed:
                keys = self.key_padding_mask[0, int(s[K_START]):int(s[K_START]) + k_len]
            else:
                keys = self.key_padding_mask[seq if self.num_seqs > 1 else 0]
            m = m & keys[None, :]
        return m

    # ------------------------------------------------------------------ devices
    def to(self, device) -> LayoutTensors:
        """The tables as int32 torch tensors on ``device``, moved once and cached. For a
        device-built layout on ``device`` itself they are its own tensors (no copy; capacity
        tails included); to another device they are copied."""
        cached = self._device_cache.get(device)      # a tensor's device: the fast path
        if cached is not None:
            return cached
        import torch

        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = device
        cached = self._device_cache.get(key)
        if cached is None and self.on_device:
            tables = {name: getattr(self, name).to(device) for name in TABLE_FIELDS}    # no copy on their device
            seqs = self._device_cache.get(_SEQS_KEY)
            if seqs is None:
                seqs = torch.from_numpy(np.asarray(self._seq_rows, dtype=np.int32))
                if device.type == "cuda":      # a pageable copy would synchronise the host
                    seqs = seqs.pin_memory().to(device, non_blocking=True)
            cached = self._device_cache[key] = LayoutTensors(**tables, seqs=seqs.to(device))
            return cached
        if cached is None:
            arrays = {name: np.array(getattr(self, name)) for name in TABLE_FIELDS}
            arrays["seqs"] = self.seqs.astype(np.int32)
            cached = LayoutTensors(**{name: torch.from_numpy(a).to(device) for name, a in arrays.items()})
            self._device_cache[key] = cached
        return cached

    # ------------------------------------------------------------------ display
    def to_string(self, width: int = 64, head: int = 0) -> str:
        """ASCII map of one head, downsampled to at most ``width`` columns."""
        from .visualize import layout_to_string

        return layout_to_string(self, width=width, head=head)

    def describe(self) -> str:
        extra = ""
        if self.num_seqs > 1:
            extra += f", {'documents' if self.packed else 'batch tables'}={self.num_seqs}"
        if self.window is not None:
            extra += f", window={self.window}"
        return (f"BlockLayout(seq_len={self.seq_len}, kv_len={self.kv_len}, block_size={self.block_size}, "
                f"causal={self.causal}, num_heads={self.num_heads}, grid={self.num_q_blocks}x{self.num_kv_blocks}"
                f"{extra}, nnz={self.nnz}, full={self.num_full}, partial={self.num_partial}, "
                f"density={self.density:.4f})")

    __repr__ = describe

    def __setattr__(self, name, value):
        if hasattr(self, "_device_cache") and name != "_device_cache":
            raise AttributeError("BlockLayout is immutable")
        object.__setattr__(self, name, value)

    def __reduce__(self):
        # pickle, copy and deepcopy (of a model holding a layout) rebuild through __init__
        # (numpy or device tables alike): the copy gets its own serial and device cache
        fields = {name: getattr(self, name) for name in (
            "seq_len", "kv_len", "block_size", "causal", "num_heads", "table_heads", "seqs",
            "packed", "window", "key_padding_mask", "compile_ms", *TABLE_FIELDS)}
        return _rebuild_layout, (fields,)


def _rebuild_layout(fields: dict) -> BlockLayout:
    return BlockLayout(**fields)
