"""Block tables from tensors, built on the tensors' device: block masks and top-k selection.

:func:`layout_from_block_mask` and :func:`topk_layout` return a device-built
:class:`~sparseflash.BlockLayout` (the tables format and its capacity tails are specified in
its docstring). Shapes follow from the arguments alone, so a build never waits for the
device (no ``.item()``, no data-dependent size) and traces with
``torch.compile(fullgraph=True)``. Two paths build exactly the same tables (values, order,
capacities; the capacity tails hold 0):

**Triton build kernels** (:mod:`sparseflash.kernels.build`; the default for CUDA tensors, one
custom op ``sparseflash::build_tables`` under torch.compile). For ``S`` table sequences
(batch elements, or 1 shared by the batch) and ``TH`` table heads:

1. a row kernel, per few query-block rows: the row's kept blocks (the mask's; or the top-k
   visible scores by rounds of arg-max over per-group maxima, plus ``include``'s), dropped
   where no pair is visible, as a bitmask of ``nk`` bits, and the row's count and full count;
2. a column kernel, per 32 key blocks: column counts and full counts from the bitmask;
3. prefix sums of the counts: the row and column pointers;
4. the forward CSR from the bitmask and the geometry's full-block bitmask (full first, each
   part ascending), and the backward CSR by the column kernel again (full query blocks
   first, each part ascending). No atomics and no sort.

On sm_90 GPUs the top-k row kernel, the transpose and the compaction run as Gluon kernels
(:mod:`sparseflash.kernels.build_gluon`, explicit register layouts; same outputs, tested
against the torch chain on the GPU; ``_ROW_GLUON`` switches them).

**Torch chain** (CPU tensors, or any tensor with ``_BUILD_KERNELS = False``), over ``C``
candidate blocks per query-block row:

1. candidates ``[S, TH, nq, C]``: key blocks ascending along the last axis, and which are
   kept (the mask's row; the top-k's blocks plus ``include``'s, duplicates dropped);
2. each candidate's class from the geometry alone, ``[nq, nk]``: no visible pair (dropped),
   partial or full, exactly as :func:`sparseflash.compile` decides it (it is computed by
   compiling ``dense()`` for the same lengths, once per geometry and device);
3. forward CSR: a stable partition of each row, full blocks first (prefix sums, row-local);
4. backward CSR: one stable sort of all candidates by (table sequence and head, key block,
   partial), which keeps query blocks ascending inside each bucket; ``searchsorted`` finds
   the bucket boundaries.

Top-k order on both paths: descending score, ties to the lower key block. Capacities are
``S * TH * nq * C`` entries in each direction (``C`` = ``nk`` for a mask, ``min(k, nk)`` plus
``include``'s most blocks per row for top-k). The H200 time of both paths at 8 x 32 heads x
64K tokens is measured by ``benchmarks/dynamic_layouts.py --suites build``.
"""
from __future__ import annotations

import ctypes
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from . import compiler
from .compiler import _check_block_size, _check_length
from .layout import NK, NQ, TABLE_FIELDS, BlockLayout, bottom_right, cdiv, seq_row
from .pattern import Pattern, dense

__all__ = ["layout_from_block_mask", "topk_layout"]

_INT32_MAX = 2**31 - 1
# Bytes a build holds per candidate at its peak (int64 sort indices and positions, int32
# keys and tables, bool flags): the bound checked against compiler.MAX_TABLE_BYTES.
_BYTES_PER_CANDIDATE = 48

# Per-geometry constants on a device (block classes, include rows, seqs rows), built on the
# host once; under torch.compile they are trace-time constants. Cleared when full.
_CONSTANTS: Dict[tuple, Tensor] = {}
_CONSTANTS_MAX = 64


class _Geometry:
    """The host metadata of a call's sequence: lengths, positions and its block grid, exactly
    what ``compile(dense(), seq_len, kv_len=kv_len, block_size=block_size)`` gives."""

    __slots__ = ("seq_len", "kv_len", "block_size", "causal", "q_pos", "k_pos", "nq", "nk")

    def __init__(self, seq_len, kv_len, block_size, causal):
        self.seq_len = _check_length("seq_len", seq_len)
        self.kv_len = self.seq_len if kv_len is None else _check_length("kv_len", kv_len)
        _check_block_size(block_size)
        if not isinstance(causal, (bool, np.bool_)):
            raise ValueError(f"causal must be a bool, got {causal!r}")
        self.block_size, self.causal = int(block_size), bool(causal)
        self.q_pos, self.k_pos = bottom_right(self.seq_len, self.kv_len)
        row = seq_row(0, self.seq_len, 0, self.kv_len, self.q_pos, self.k_pos, 0, 0, self.block_size)
        self.nq, self.nk = row[NQ], row[NK]

    def key(self) -> tuple:
        return (self.seq_len, self.kv_len, self.block_size, self.causal)

    def seq_rows(self, num_seqs: int, table_heads: int) -> tuple:
        """Rows of ``seqs``: sequence s is batch element s (or the one shared sequence)."""
        return tuple(seq_row(0, self.seq_len, 0, self.kv_len, self.q_pos, self.k_pos,
                             s * table_heads * self.nq, s * table_heads * self.nk, self.block_size)
                     for s in range(num_seqs))


# ----------------------------------------------------------------------------- constants
def _constant(key: tuple, build) -> Tensor:
    got = _CONSTANTS.get(key)
    if got is None:
        if len(_CONSTANTS) >= _CONSTANTS_MAX:
            _CONSTANTS.clear()
        got = _CONSTANTS[key] = build()
    return got


@torch.compiler.assume_constant_result
def _block_classes(seq_len: int, kv_len: int, block_size: int, causal: bool, device: str) -> Tensor:
    """int8 ``[nq, nk]``: 0 where a block has no visible pair, 1 partial, 2 full (the rule of
    BlockLayout's docstring, from the compiler itself)."""
    def build():
        layout = compiler.compile(dense(), seq_len, kv_len=kv_len, block_size=block_size,
                                  causal=causal)
        classes = layout.to_dense("any")[0].astype(np.int8) + layout.to_dense("full")[0]
        return torch.from_numpy(classes).to(device)
    return _constant(("classes", seq_len, kv_len, block_size, causal, device), build)


def _seqs_tensor(rows: tuple, device: str) -> Tensor:
    """The rows of ``seqs`` as the int32 tensor the kernels read. Under torch.compile a
    graph constant (the layout returned from a compiled function holds it, and Dynamo cannot
    rebuild an assume_constant_result tensor there); eagerly a cached copy, since copying
    host data to a GPU waits for it."""
    if torch.compiler.is_compiling():
        return torch.tensor(rows, dtype=torch.int32, device=device)
    return _constant(("seqs", rows, device),
                     lambda: torch.tensor(rows, dtype=torch.int32).to(device))


def _include_blocks(include, seq_len, kv_len, block_size, causal, num_heads) -> np.ndarray:
    """bool ``[table heads of include, nq, nk]``: the blocks of the static pattern (or layout)
    ``include`` on the call's grid."""
    layout = include if isinstance(include, BlockLayout) else compiler.compile(
        include, seq_len, kv_len=kv_len, block_size=block_size, causal=causal, num_heads=num_heads)
    return layout.to_dense()[:layout.table_heads]


@torch.compiler.assume_constant_result
def _include_rows(include_id: int, seq_len: int, kv_len: int, block_size: int, causal: bool,
                  num_heads: int, device: str) -> Tensor:
    """int32 ``[table heads of include, nq, max blocks per row]``: each row's blocks of the
    static pattern (or layout) ``include``, ascending, padded with ``nk``. ``include_id`` is
    ``id(include)`` (the caller holds it alive): a literal that torch.compile can pass."""
    include = ctypes.cast(include_id, ctypes.py_object).value

    def build():
        blocks = _include_blocks(include, seq_len, kv_len, block_size, causal, num_heads)
        count = blocks.sum(-1)                                             # [th, nq]
        width = int(count.max(initial=0))
        rows = np.argsort(~blocks, axis=-1, kind="stable")[..., :width]    # kept first, ascending
        rows = np.where(np.arange(width) < count[..., None], rows, blocks.shape[-1])
        return torch.from_numpy(rows.astype(np.int32)).to(device)
    # keyed by the object (kept alive by the cache), not its id, which a later object may reuse
    return _constant(("include", include, seq_len, kv_len, block_size, causal, num_heads, device),
                     build)


# ----------------------------------------------------------------------------- checks
def _table_heads(name: str, heads: int, num_heads: Optional[int]) -> int:
    """num_heads of the layout: the tensor's head count, or any count for one shared head."""
    if num_heads is None:
        return heads
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if heads not in (1, num_heads):
        raise ValueError(f"{name}: {heads} heads but num_heads={num_heads} (use 1 head to share "
                         f"one pattern across heads)")
    return num_heads


def _check_grid(name: str, t: Tensor, geo: _Geometry, what: str) -> None:
    ranks = (3, 4) if name == "mask" else (4,)
    if t.dim() not in ranks or tuple(t.shape[-2:]) != (geo.nq, geo.nk):
        forms = "(batch, heads, nq, nk) or (heads, nq, nk)" if name == "mask" else "(batch, heads, nq, nk)"
        raise ValueError(
            f"{name} must have shape {forms} with (nq, nk) = {(geo.nq, geo.nk)}, the block grid of "
            f"seq_len={geo.seq_len}, kv_len={geo.kv_len}, block_size={geo.block_size} "
            f"(what sparseflash.compile builds); got {what} of shape {tuple(t.shape)}")


def _check_capacity(geo: _Geometry, num_seqs: int, table_heads: int, per_row: int) -> None:
    """Refuse, before allocating, a build past the int32 tables or compiler.MAX_TABLE_BYTES."""
    entries = num_seqs * table_heads * geo.nq * per_row
    buckets = 2 * num_seqs * table_heads * geo.nk + 1
    nbytes = entries * _BYTES_PER_CANDIDATE
    if entries <= _INT32_MAX and buckets <= _INT32_MAX and nbytes <= compiler.MAX_TABLE_BYTES:
        return
    raise ValueError(
        f"seq_len={geo.seq_len}, kv_len={geo.kv_len} and block_size={geo.block_size} give a "
        f"{geo.nq:,} x {geo.nk:,} block grid; with {num_seqs} batch tables x {table_heads} heads "
        f"x {per_row:,} candidates per row the build needs {entries:,} entries "
        f"({nbytes / 2**30:.1f} GiB at peak), more than int32 tables or "
        f"sparseflash.compiler.MAX_TABLE_BYTES = {compiler.MAX_TABLE_BYTES / 2**30:.1f} GiB allow. "
        f"Use a larger block_size, a smaller batch or a smaller k.")


# ----------------------------------------------------------------------------- the tables
def _device_layout(geo: _Geometry, cand: Tensor, keep: Tensor, num_heads: int) -> BlockLayout:
    """The layout of candidates ``cand`` (int ``[S, TH, nq, C]``, ascending along C among the
    kept ones, values in [0, nk]) where ``keep`` (bool, same shape) holds."""
    S, TH, nq, C = cand.shape
    nk, device = geo.nk, cand.device
    R = S * TH * nq
    classes = _block_classes(*geo.key(), str(device))                   # [nq, nk] int8
    j = cand.clamp(max=nk - 1).long()                                   # [S, TH, nq, C]
    cls = classes[torch.arange(nq, device=device)[:, None], j]          # [S, TH, nq, C]
    keep = keep & (cls > 0)
    full = keep & (cls == 2)
    partial = keep & (cls == 1)

    # forward CSR: full blocks first, then partial ones; each part keeps ascending columns.
    i32 = torch.int32
    nfull = full.sum(-1, dtype=i32)                                     # [S, TH, nq]
    count = keep.sum(-1, dtype=i32)
    fwd_ptr = torch.cat([count.new_zeros(1), count.flatten().cumsum(0, dtype=i32)])  # [R + 1]
    rank = torch.where(full, full.cumsum(-1, dtype=i32) - 1,
                       nfull[..., None] + partial.cumsum(-1, dtype=i32) - 1)
    start = fwd_ptr[:-1].view(S, TH, nq, 1)
    # dropped candidates go to one slot past the capacity, cut off: the tail stays 0
    pos = torch.where(keep, start + rank, R * C)
    fwd_idx = torch.zeros(R * C + 1, dtype=i32, device=device).scatter_(
        0, pos.flatten().long(), j.flatten().to(i32))[:R * C]

    # backward CSR: buckets (table sequence and head, key block, partial); the stable sort
    # keeps the flattened order, query blocks ascending, inside each bucket.
    NC = S * TH * nk
    st = torch.arange(S * TH, device=device, dtype=i32).view(S, TH, 1, 1)
    bucket = torch.where(keep, (st * nk + j.to(i32)) * 2 + partial.to(i32), 2 * NC)
    bucket, order = torch.sort(bucket.flatten(), stable=True)
    q_block = torch.arange(nq, device=device, dtype=i32).view(1, 1, nq, 1).expand(S, TH, nq, C)
    bwd_idx = torch.where(bucket < 2 * NC, q_block.flatten()[order], 0)   # the tail stays 0
    bounds = torch.searchsorted(bucket, torch.arange(2 * NC + 1, device=device, dtype=i32),
                                out_int32=True)                        # [2 * NC + 1]
    bwd_ptr = bounds[0::2].contiguous()                                # the kernels index it densely
    bwd_nfull = bounds[1::2] - bounds[0:-1:2]

    rows = geo.seq_rows(S, TH)
    return BlockLayout.from_tensors(
        seq_len=geo.seq_len, kv_len=geo.kv_len, block_size=geo.block_size, causal=geo.causal,
        num_heads=num_heads, table_heads=TH, seq_rows=rows, seqs_tensor=_seqs_tensor(rows, str(device)),
        fwd_ptr=fwd_ptr, fwd_idx=fwd_idx, fwd_nfull=nfull.flatten(), bwd_ptr=bwd_ptr,
        bwd_idx=bwd_idx, bwd_nfull=bwd_nfull)


def _topk_mask(s: Tensor, kk: int) -> Tensor:
    """bool, ``s``'s shape: each row's ``kk`` best finite scores, ties to the lower key block
    (the order of a stable descending sort; the Triton kernels use the same rule)."""
    # torch.topk's choice among tied scores is unspecified, but its k-th value is not: keep
    # what beats it, then the first of its ties up to k
    kth = s.topk(kk, dim=-1, sorted=False).values.amin(-1, keepdim=True)   # [..., 1]
    above = s > kth
    tie = s == kth
    need = kk - above.sum(-1, keepdim=True, dtype=torch.int32)
    return (above | (tie & (tie.cumsum(-1, dtype=torch.int32) <= need))) & (s > float("-inf"))


# ----------------------------------------------------------------------------- the kernel path
# Which path builds the tables: None picks the Triton kernels for CUDA tensors (and the torch
# chain elsewhere), True forces the kernels (CPU tensors under TRITON_INTERPRET=1, eager or
# compiled: the build is one custom op), False forces the torch chain. The environment
# variable SPARSEFLASH_BUILD_KERNELS=1 / 0 sets it at import.
_BUILD_KERNELS: Optional[bool] = {"1": True, "0": False}.get(os.environ.get("SPARSEFLASH_BUILD_KERNELS", ""))
# The row kernel holds a row of scores in registers: wider grids take the torch chain.
_KERNELS_MAX_NK = 16384
# Elements of the row kernels' tile (ROWS query-block rows of NK_PAD key blocks) and its
# warps (None: one per 2048 elements, at most 8), and the bitmask words per program of the
# compaction kernel. Measured on an H200 at 8 x 32 heads x 512 x 512 blocks, k = 16
# (benchmarks/dynamic_layouts.py --suites build_tiles, GPU time): tile 2048 with 1 warp
# 0.367 ms, 4096 with 2 warps 0.370, 4096 with 4 warps 0.427; compaction 512 words best.
_ROW_TILE = 2048
_ROW_WARPS: Optional[int] = None
_COMPACT_ROWS = 512
# Tried on an H200 and removed (run7, run8 in benchmarks/results/h200-dynamic-layouts):
# a first pass in chunks of 64 or 128 key blocks (fewer registers: 0.364 / 0.373 ms against
# 0.345), and rounds over packed int64 (score, block) keys instead of (max, index) pairs
# (0.341-0.406 ms against 0.332-0.400 at the same tiles and warps).


# The build kernels in Gluon (kernels/build_gluon.py: the top-k rows with TPR lanes per row,
# the transpose, the compaction) on sm_90 GPUs: None = wherever they apply (``_gluon_kernels``),
# False = always the ``tl`` kernels, True = a top-k build refuses to fall back (GPU tests use
# it to be sure which kernel ran). SPARSEFLASH_ROW_GLUON=0 / 1 sets it. Measured on an H200 at
# 8 x 32 heads x 512 x 512 blocks, k = 16, causal (benchmarks/rows_probe.py, CUDA-graph
# replay, run12): topk_layout 0.3385 ms with the tl kernels, 0.1862 with the Gluon ones; rows
# 0.189 -> 0.099 ms, transpose 0.063 -> 0.034, compaction x2 0.068 -> 0.035.
_ROW_GLUON: Optional[bool] = {"1": True, "0": False}.get(os.environ.get("SPARSEFLASH_ROW_GLUON", ""))
# Its warps per program (32 / TPR rows each) and lanes per row (TPR; same run: 2 lanes 0.2076
# ms, 4 lanes 0.1862, 8 lanes 0.2166; 2 warps 0.1867), whether the transpose and compaction run
# in Gluon too, and the compaction's warps and lanes per row (None: a word per lane, at most
# 32; 1 / 2 / 4 / 8 / 16 lanes: 0.2155 / 0.2052 / 0.1861 / 0.1933 / 0.2328 ms; 2 warps 0.1995).
# Tried and removed (run10 in benchmarks/results/h200-dynamic-layouts): a transpose by warp
# votes (coalesced word loads, 32 ballots per step) took 0.043 ms against 0.034 for the
# broadcast loads; (run12a) one Gluon kernel writing both pointer arrays took 0.115 ms against
# 0.012 for torch's cumsum and cat.
_GLUON_WARPS = 1
_GLUON_TPR = 4
_GLUON_TRANSPOSE = True
_GLUON_COMPACT_WARPS = 1
_GLUON_COMPACT_LANES: Optional[int] = 4
# The Gluon row kernel's groups are bitmask words (32 key blocks), and its per-group state
# grows with them: wider rows take the ``tl`` kernel. topk_layout (k = 16, causal, 32 heads)
# with the Gluon rows against the tl ones, H200 (rows_probe.py --widths, run14): 512 / 1000 /
# 1024 / 2048 / 4096 / 8192 key blocks: 0.187 / 0.217 / 0.196 / 0.387 / 1.92 / 8.56 ms against
# 0.339 / 0.406 / 0.309 / 0.572 / 2.55 / 10.25 (the row kernels alone 1.30 / 5.80 against
# 1.78 / 7.32 ms at 4096 / 8192), tables equal.
_GLUON_ROWS_MAX_NK = 8192


def _nk_pad(nk: int) -> int:
    return max(32, 1 << (nk - 1).bit_length())


def _use_kernels(t: Tensor, nq: int, nk: int) -> bool:
    if _BUILD_KERNELS is False or max(_nk_pad(nq), _nk_pad(nk)) > _KERNELS_MAX_NK:
        return False
    if t.is_cuda:
        return True
    return bool(_BUILD_KERNELS) and t.device.type == "cpu"


def _gluon_kernels(src: Tensor, visible_prefix: Tensor, nq: int, nk_pad: int,
                   topk: bool) -> Tuple[bool, bool]:
    """(the top-k row kernel, the transpose and compaction) in Gluon? (see ``_ROW_GLUON``).
    The transpose and the compaction take any input of an sm_90 GPU (``_GLUON_TRANSPOSE``);
    the row kernel, a top-k build only, also needs float32/16-bit scores (float64 ones would
    be rounded), rows that see a prefix of their key blocks, and at most ``_GLUON_ROWS_MAX_NK``
    key blocks (padded to a power of two). With ``_ROW_GLUON`` True, a
    top-k build that cannot take the Gluon row kernel raises instead of falling back."""
    if _ROW_GLUON is False:
        return False, False
    device_why = None
    if not src.is_cuda or torch.cuda.get_device_capability(src.device)[0] != 9:
        device_why = "not an sm_90 GPU"
    else:
        try:
            from .kernels import build_gluon  # noqa: F401
        except ImportError as e:          # a Triton without Gluon
            device_why = f"Gluon is not available ({e})"
    rows_why = device_why
    if rows_why is None and src.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        rows_why = f"{src.dtype} scores (float32, float16 or bfloat16 only)"
    elif rows_why is None and visible_prefix.numel() != nq:
        rows_why = "some row's visible key blocks are not a prefix"
    elif rows_why is None and nk_pad > _GLUON_ROWS_MAX_NK:
        rows_why = f"{nk_pad} key blocks padded (at most {_GLUON_ROWS_MAX_NK})"
    if topk and rows_why is not None and _ROW_GLUON:
        raise RuntimeError(f"_ROW_GLUON=True but the Gluon row kernel cannot run: {rows_why}")
    return topk and rows_why is None, bool(_GLUON_TRANSPOSE) and device_why is None


def _pack_bits(blocks: np.ndarray, nk_pad: int) -> np.ndarray:
    """int32 words ``[..., nk_pad // 32]`` of bool ``[..., nk]``: bit ``j % 32`` of word ``j // 32``."""
    padded = np.zeros(blocks.shape[:-1] + (nk_pad,), np.uint64)
    padded[..., :blocks.shape[-1]] = blocks
    words = (padded.reshape(blocks.shape[:-1] + (nk_pad // 32, 32)) << np.arange(32, dtype=np.uint64)).sum(-1)
    return words.astype(np.uint32).view(np.int32)


@torch.compiler.assume_constant_result
def _class_bits(seq_len: int, kv_len: int, block_size: int, causal: bool, device: str) -> Tensor:
    """int32 ``[2, nq, W]``: the visible and the full blocks of ``_block_classes`` as bitmask words."""
    def build():
        classes = _block_classes(seq_len, kv_len, block_size, causal, "cpu").numpy()
        nk_pad = _nk_pad(classes.shape[-1])
        return torch.from_numpy(np.stack([_pack_bits(classes > 0, nk_pad),
                                          _pack_bits(classes == 2, nk_pad)])).to(device)
    return _constant(("class_bits", seq_len, kv_len, block_size, causal, device), build)


@torch.compiler.assume_constant_result
def _visible_prefix(seq_len: int, kv_len: int, block_size: int, causal: bool, device: str) -> Tensor:
    """int32 ``[nq]``: row i's visible key blocks are ``[0, hi[i])`` (true of every ``dense()``
    grid: the causal line only cuts a row's end), or an empty tensor if some row's visible
    blocks were not a prefix (then the Gluon row kernel does not apply)."""
    def build():
        vis = _block_classes(seq_len, kv_len, block_size, causal, "cpu").numpy() > 0
        hi = vis.sum(-1)
        prefix = np.arange(vis.shape[-1])[None, :] < hi[:, None]
        hi = hi.astype(np.int32) if np.array_equal(vis, prefix) else np.zeros(0, np.int32)
        return torch.from_numpy(hi).to(device)
    return _constant(("visible_prefix", seq_len, kv_len, block_size, causal, device), build)


@torch.compiler.assume_constant_result
def _full_t_bits(seq_len: int, kv_len: int, block_size: int, causal: bool, device: str) -> Tensor:
    """int32 ``[nk, nq_pad // 32]``: the full blocks of ``_block_classes`` transposed (key
    block rows of query block bits), the backward's bitmask words."""
    def build():
        classes = _block_classes(seq_len, kv_len, block_size, causal, "cpu").numpy()
        return torch.from_numpy(_pack_bits(classes.T == 2, _nk_pad(classes.shape[0]))).to(device)
    return _constant(("full_t_bits", seq_len, kv_len, block_size, causal, device), build)


@torch.compiler.assume_constant_result
def _include_bits(include_id: int, seq_len: int, kv_len: int, block_size: int, causal: bool,
                  num_heads: int, device: str) -> Tensor:
    """int32 ``[table heads of include, nq, W]``: ``include``'s blocks as bitmask words (as
    ``_include_rows``)."""
    include = ctypes.cast(include_id, ctypes.py_object).value

    def build():
        blocks = _include_blocks(include, seq_len, kv_len, block_size, causal, num_heads)
        return torch.from_numpy(_pack_bits(blocks, _nk_pad(blocks.shape[-1]))).to(device)
    return _constant(("include_bits", include, seq_len, kv_len, block_size, causal, num_heads, device),
                     build)


def _kernel_layout(geo: _Geometry, src: Tensor, k: Optional[int], inc: Optional[Tensor],
                   TH: int, C: int, num_heads: int) -> BlockLayout:
    """The tables of the torch chain (same values, order and zero capacity tails), built by
    the kernels of :mod:`sparseflash.kernels.build`: ``src`` is the mask (bool) or the scores
    ``[S, 1 or TH, nq, nk]``; ``k`` None for a mask; ``inc`` include's bitmask words."""
    device = src.device
    # eagerly the op's function itself: the dispatcher would add host time to a short build
    build = _build_tables if torch.compiler.is_compiling() else _build_tables_impl
    key = (*geo.key(), str(device))
    tables = build(src, _block_classes(*key), _class_bits(*key), _full_t_bits(*key),
                   _visible_prefix(*key), inc, TH, 0 if k is None else k, C)
    seq_rows = geo.seq_rows(src.shape[0], TH)
    return BlockLayout.from_tensors(
        seq_len=geo.seq_len, kv_len=geo.kv_len, block_size=geo.block_size, causal=geo.causal,
        num_heads=num_heads, table_heads=TH, seq_rows=seq_rows,
        seqs_tensor=_seqs_tensor(seq_rows, str(device)), **dict(zip(TABLE_FIELDS, tables)))




def _build_tables_impl(src: Tensor, classes: Tensor, class_bits: Tensor, full_t_bits: Tensor,
                       visible_prefix: Tensor, include_bits: Optional[Tensor], table_heads: int,
                       k: int, capacity: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(fwd_ptr, fwd_idx, fwd_nfull, bwd_ptr, bwd_idx, bwd_nfull)`` of the mask (bool
    ``src``, ``k`` 0) or of the top-``k`` of the scores ``src`` ``[S, 1 or table_heads, nq,
    nk]`` plus ``include_bits``' blocks; ``capacity`` entries per row in each direction.
    ``visible_prefix``: ``_visible_prefix``'s row lengths (the Gluon row kernel's input)."""
    from .kernels.build import _compact_kernel, _rows_kernel, _transpose_kernel

    S, Hs = src.shape[0], src.shape[1]
    (nq, nk), device = classes.shape, src.device
    nk_pad, nq_pad = _nk_pad(nk), _nk_pad(nq)
    W, WQ = nk_pad // 32, nq_pad // 32
    ST = S * table_heads
    R, NC = ST * nq, ST * nk
    i32 = torch.int32
    vis, full = class_bits[0], class_bits[1]
    if src.dtype == torch.bool:
        src = src.view(torch.uint8)
    # 1. each row's kept blocks as bitmask words, with its counts
    rows = max(1, min(16, _ROW_TILE // nk_pad, 1 << (nq - 1).bit_length()))
    gs = 1 << -(-(nk_pad.bit_length() - 1) // 2)        # groups of about sqrt(NK_PAD) blocks
    warps = _ROW_WARPS or max(1, min(8, rows * nk_pad // 2048))
    inc = include_bits
    bits = torch.empty(R * W, dtype=i32, device=device)
    count = torch.empty(R, dtype=i32, device=device)
    nfull = torch.empty(R, dtype=i32, device=device)
    strides = (src.stride(0), src.stride(1) if Hs > 1 else 0, src.stride(2), src.stride(3),
               0 if inc is None or inc.shape[0] == 1 else nq * W)
    upcast = src.dtype in (torch.float16, torch.bfloat16)
    gluon_rows, gluon_rest = _gluon_kernels(src, visible_prefix, nq, nk_pad, topk=k > 0)
    if gluon_rows:
        from .kernels.build_gluon import _topk_rows_kernel
        tpr = _GLUON_TPR
        _topk_rows_kernel[(cdiv(nq, 32 // tpr * _GLUON_WARPS), ST)](
            src, visible_prefix, vis, full, vis if inc is None else inc, bits, count, nfull,
            *strides, table_heads, nq, nk, k,
            NK_PAD=nk_pad, W=W, V=max(1, min(W, 32) // tpr), TPR=tpr,
            EVEN=nk == nk_pad, HAS_INCLUDE=inc is not None, NUM_WARPS=_GLUON_WARPS,
            num_warps=_GLUON_WARPS)
    else:
        _rows_kernel[(cdiv(nq, rows), ST)](
            src, classes, vis, full, vis if inc is None else inc, bits, count, nfull,
            *strides, table_heads, nq, nk, k,
            NK_PAD=nk_pad, W=W, ROWS=rows, GS=gs, TOPK=k > 0, HAS_INCLUDE=inc is not None,
            UPCAST=upcast, num_warps=warps)
    # 2. the transposed bitmask (key block rows of query block bits), with the column counts
    bits_t = torch.empty(NC * WQ, dtype=i32, device=device)
    bwd_count = torch.empty(NC, dtype=i32, device=device)
    bwd_nfull = torch.empty(NC, dtype=i32, device=device)
    if gluon_rest:
        from .kernels.build_gluon import _compact_kernel as _gluon_compact
        from .kernels.build_gluon import _transpose_kernel as _gluon_transpose
        _gluon_transpose[(W, ST)](bits, full_t_bits, bits_t, bwd_count, bwd_nfull, nq, nk,
                                  W=W, WQ=WQ, num_warps=1)
    else:
        _transpose_kernel[(W, ST)](bits, full_t_bits, bits_t, bwd_count, bwd_nfull, nq, nk,
                                   W=W, WQ=WQ, QW=min(WQ, 4), num_warps=4)
    # 3. pointers: prefix sums of the counts
    zero = count.new_zeros(1)
    fwd_ptr = torch.cat([zero, count.cumsum(0, dtype=i32)])              # [R + 1]
    bwd_ptr = torch.cat([zero, bwd_count.cumsum(0, dtype=i32)])          # [NC + 1]
    # 4. both CSRs, full blocks first, each part ascending. The capacity tails (past ptr[-1])
    # are left unwritten: nothing reads them, and zeroing them was 0.116 of the mask path's
    # 0.303 ms on an H200 at 8 x 32 x 512 x 512 blocks (its capacity is the dense grid).
    fwd_idx = torch.empty(R * capacity, dtype=i32, device=device)
    bwd_idx = torch.empty(R * capacity, dtype=i32, device=device)
    for words, n, nw, other, full_bits, ptr, nf, idx in (
            (bits, nq, W, nk, full, fwd_ptr, nfull, fwd_idx),
            (bits_t, nk, WQ, nq, full_t_bits, bwd_ptr, bwd_nfull, bwd_idx)):
        if gluon_rest:
            tw = min(nw, 32, _GLUON_COMPACT_LANES or 32)
            _gluon_compact[(cdiv(n, 32 // tw * _GLUON_COMPACT_WARPS), ST)](
                words, full_bits, ptr, nf, idx, n, cdiv(other, 32), W=nw, TW=tw,
                NUM_WARPS=_GLUON_COMPACT_WARPS, num_warps=_GLUON_COMPACT_WARPS)
            continue
        crow = max(1, min(_COMPACT_ROWS // nw, 1 << (n - 1).bit_length()))
        _compact_kernel[(cdiv(n, crow), ST)](words, full_bits, ptr, nf, idx, n, cdiv(other, 32),
                                             W=nw, ROWS=crow, num_warps=4)
    return fwd_ptr, fwd_idx, nfull, bwd_ptr, bwd_idx, bwd_nfull


# One opaque op under torch.compile: Dynamo never traces the Triton launches (so the
# interpreter's kernels trace on CPU too), and the graph holds one node for the build.
_build_tables = torch.library.custom_op("sparseflash::build_tables", _build_tables_impl, mutates_args=())


@_build_tables.register_fake
def _build_tables_fake(src, classes, class_bits, full_t_bits, visible_prefix, include_bits, table_heads,
                       k, capacity):
    R, NC = (src.shape[0] * table_heads * n for n in classes.shape)
    new = lambda n: src.new_empty(n, dtype=torch.int32)                  # noqa: E731
    return new(R + 1), new(R * capacity), new(R), new(NC + 1), new(R * capacity), new(NC)


# ----------------------------------------------------------------------------- public builders
def layout_from_block_mask(mask: Tensor, *, seq_len: int, kv_len: Optional[int] = None,
                           block_size: int, causal: bool = False,
                           num_heads: Optional[int] = None) -> BlockLayout:
    """A layout storing the blocks a bool block mask keeps, built on the mask's device.

    Args:
        mask: bool ``(batch, heads, nq, nk)`` (one table per batch element) or ``(heads, nq,
            nk)`` (one table shared by the batch); ``heads`` is ``num_heads`` or 1 (one
            pattern for every head). ``mask[..., i, j]`` keeps local block ``(i, j)``: query
            block ``q_pos // block_size + i`` and key block ``k_pos // block_size + j`` in
            absolute positions, aligned bottom-right (``BlockLayout``, "Absolute positions"),
            on exactly the grid ``sparseflash.compile(dense(), seq_len, kv_len=kv_len,
            block_size=block_size)`` builds: ``nq = layout.num_q_blocks``, ``nk =
            layout.num_kv_blocks``. Blocks with no visible pair (past the causal line) are
            dropped.
        seq_len, kv_len: query and key lengths in tokens (``kv_len`` defaults to ``seq_len``).
        block_size: tokens per block, a power of two in [16, 256].
        causal: the token-level causal mask in absolute positions.
        num_heads: query heads of the calls (default: the mask's ``heads``); with a 1-head
            mask, any count.

    Returns:
        A device-built :class:`~sparseflash.BlockLayout` (``on_device``): forward CSR,
        backward transpose and the full/partial split, per batch element, as int32 tensors
        on ``mask.device`` with capacity ``batch * heads * nq * nk`` entries. No host sync.
    """
    geo = _Geometry(seq_len, kv_len, block_size, causal)
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = keep the block), got dtype {mask.dtype}")
    _check_grid("mask", mask, geo, "a mask")
    mask = mask if mask.dim() == 4 else mask[None]                      # [S, TH, nq, nk]
    S, TH = mask.shape[0], mask.shape[1]
    heads = _table_heads("mask", TH, num_heads)
    _check_capacity(geo, S, TH, geo.nk)
    if _use_kernels(mask, geo.nq, geo.nk):
        return _kernel_layout(geo, mask, None, None, TH, geo.nk, heads)
    cand = torch.arange(geo.nk, device=mask.device, dtype=torch.int32).expand(S, TH, geo.nq, geo.nk)
    return _device_layout(geo, cand, mask, heads)


def topk_layout(scores: Tensor, k: int, *, seq_len: int, kv_len: Optional[int] = None,
                block_size: int, causal: bool = False,
                include: "Optional[Pattern | BlockLayout]" = None,
                num_heads: Optional[int] = None) -> BlockLayout:
    """A layout where each query block keeps its ``k`` highest-scoring visible key blocks,
    plus every block of a static pattern, built on the scores' device.

    Args:
        scores: floating point ``(batch, heads, nq, nk)`` on the block grid of
            :func:`layout_from_block_mask` (one table per batch element; ``heads`` is
            ``num_heads`` or 1). Read without gradient: the tables are integers and nothing
            flows back into ``scores``. Must not hold NaN (not checked: that would sync).
        k: key blocks kept per query-block row, > 0. A row keeps every candidate when it has
            fewer than ``k``. Candidates are the visible blocks (with ``causal``, blocks
            wholly above the causal line are not) whose score is not ``-inf``: ``-inf``
            excludes a block from the selection. Ties at the k-th score keep the lower
            key blocks (strictly higher scores always are kept), on every device.
        seq_len, kv_len, block_size, causal: as :func:`layout_from_block_mask`.
        include: a :class:`~sparseflash.Pattern` (for example ``local(0) | global_blocks(1)``,
            compiled for this geometry and ``num_heads``; a per-head pattern needs
            ``num_heads`` heads) or a one-sequence :class:`~sparseflash.BlockLayout` of the
            same lengths and block size; its blocks are added to every row's selection.
            Under ``torch.compile``, build it outside the compiled function (a global, a
            module attribute), as ``sparse_attention``'s pattern.
        num_heads: query heads of the calls (default: the scores' ``heads``).

    Returns:
        A device-built :class:`~sparseflash.BlockLayout` (``on_device``), int32 tables on
        ``scores.device`` with capacity ``batch * heads * nq * (min(k, nk) + include's most
        blocks per row)`` entries. No host sync.
    """
    geo = _Geometry(seq_len, kv_len, block_size, causal)
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a floating-point torch.Tensor, got {type(scores).__name__}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got dtype {scores.dtype}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be a positive int (key blocks per row), got {type(k).__name__} {k!r}")
    if k <= 0:
        raise ValueError(f"k must be a positive int (key blocks per row), got {k}")
    _check_grid("scores", scores, geo, "scores")
    S, Hs = scores.shape[0], scores.shape[1]
    heads = _table_heads("scores", Hs, num_heads)
    device = scores.device
    kk = min(int(k), geo.nk)
    inc = None
    if include is not None:
        _check_include(include, geo, heads)
        inc = _include_rows(id(include), *geo.key(), heads, str(device))  # [th_inc, nq, w]
    TH = max(Hs, 1 if inc is None else inc.shape[0])
    _check_capacity(geo, S, TH, kk + (0 if inc is None else inc.shape[-1]))

    s = scores.detach()
    if _use_kernels(s, geo.nq, geo.nk):
        bits = None if include is None else _include_bits(id(include), *geo.key(), heads, str(device))
        return _kernel_layout(geo, s, kk, bits, TH, kk + (0 if inc is None else inc.shape[-1]), heads)
    if geo.causal:
        classes = _block_classes(*geo.key(), str(device))
        s = s.masked_fill(classes == 0, float("-inf"))
    chosen = _topk_mask(s, kk)                                          # [S, Hs, nq, nk]
    # the chosen blocks ascending, padded with nk: at most kk per row, so a cumsum places
    # them; the others all land in slot kk, cut off
    slot = torch.where(chosen, chosen.cumsum(-1, dtype=torch.int32) - 1, kk).long()
    blocks = torch.arange(geo.nk, device=device, dtype=torch.int32).expand_as(slot)
    cand = torch.full((S, Hs, geo.nq, kk + 1), geo.nk, dtype=torch.int32, device=device)
    cand = cand.scatter_(-1, slot, blocks)[..., :kk].expand(S, TH, geo.nq, kk)
    if inc is not None:
        cand = torch.cat([cand, inc.expand(S, TH, geo.nq, inc.shape[-1])], dim=-1)
        cand = cand.sort(dim=-1).values                                 # dropped (nk) last
    first = torch.ones_like(cand[..., :1], dtype=torch.bool)
    keep = (cand < geo.nk) & torch.cat([first, cand[..., 1:] != cand[..., :-1]], dim=-1)
    return _device_layout(geo, cand, keep, heads)


def _check_include(include, geo: _Geometry, num_heads: int) -> None:
    if isinstance(include, Pattern):
        if include.num_heads is not None and include.num_heads != num_heads:
            raise ValueError(f"include: a per-head pattern of {include.num_heads} heads, but the "
                             f"layout has num_heads={num_heads}")
        return
    if not isinstance(include, BlockLayout):
        raise TypeError(f"include must be a sparseflash Pattern or BlockLayout, got {type(include).__name__}")
    got = (include.seq_len, include.kv_len, include.block_size)
    want = (geo.seq_len, geo.kv_len, geo.block_size)
    if got != want or include.num_seqs != 1 or include.packed:
        raise ValueError(f"include: a BlockLayout of another grid: (seq_len, kv_len, block_size) = "
                         f"{got} with {include.num_seqs} sequence(s), expected {want} with one")
    if include.table_heads not in (1, num_heads):
        raise ValueError(f"include: a layout of {include.table_heads} heads, but the layout has "
                         f"num_heads={num_heads}")
