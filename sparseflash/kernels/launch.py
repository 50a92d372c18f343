"""Launchers for the block-sparse FlashAttention kernels: shapes, grids, allocation, configs.

The kernels themselves are pure ``@triton.jit`` code in :mod:`.fwd`, :mod:`.bwd` and :mod:`.decode`, over the tile helpers of :mod:`.tiles`.
Inputs are ``q (B, Hq, N, d)``, ``k, v (B, Hkv, Nk, d)`` with any strides (they are passed
to the kernels, nothing is copied). Outputs are allocated contiguous.

Precision: fp16/bf16 operands go to the tensor cores with fp32 accumulation; fp32 operands
use ``input_precision="ieee"`` (no tf32), so fp32 results are fp32-accurate.

Per call, with no autotuning: tiles, warps and stages come from a small table per
(padded head dim, causal, dtype) (``fwd_config``/``bwd_config``, measured on H100);
tensor-descriptor (TMA) loads where the config asks and the tensors allow
(``_use_tma``); a heavy-first launch order when some rows/columns walk far more blocks
than the mean (``_launch_order``, cached by the caller per layout).

Repeated calls: a launch plan per (layout, shapes, strides, dtype, device) holds all of the
above plus the compiled binaries, which later calls launch directly (:class:`_Launch`),
skipping Triton's per-launch argument binding and specialisation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace as _replace
import os
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
from triton import knobs as _knobs

from .bwd import _bwd_dkdv_kernel, _bwd_dq_kernel, _dq_convert_kernel
from .decode import _decode_combine_kernel, _decode_split_kernel
from .fwd import _fwd_kernel

_LOG2E = 1.4426950408889634      # 1 / ln 2: the kernels' softmax runs in base 2 (kernels/tiles.py)

__all__ = ["FwdConfig", "BwdConfig", "fwd_config", "bwd_config", "is_interpreted",
           "attention_forward", "attention_backward", "decode_forward"]


def is_interpreted() -> bool:
    """True when the kernels were built by Triton's interpreter (TRITON_INTERPRET=1 at import)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_fwd_kernel, InterpretedFunction)


@dataclass(frozen=True)
class FwdConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    tma: bool = False      # stream K/V through tensor descriptors where the tensors allow it


@dataclass(frozen=True)
class BwdConfig:
    # dK/dV kernel: key tile per program (block_n1) x query tile per step (block_m1)
    block_m1: int
    block_n1: int
    # dQ kernel: query tile per program (block_m2) x key tile per step (block_n2)
    block_m2: int
    block_n2: int
    num_warps: int
    num_stages: int
    tma: bool = False      # stream Q/dO (dK/dV) and K/V (dQ) through tensor descriptors


def _fit(tile: int, block_size: int) -> int:
    """Largest power of two <= tile that divides the layout block (tiles never straddle blocks)."""
    t = min(tile, block_size)
    while block_size % t:
        t //= 2
    return t


# Forward tiles for Hopper (H100): (BLOCK_M, BLOCK_N, num_warps, num_stages, tma) by
# (padded head dim, causal), measured in bf16 (benchmarks/NOTES.md, runs 1, 4, 5):
# d=128: 128x128 with 8 warps beats 128x64 (515 vs 502 TFLOP/s at 16K, index prefetch on);
#   4 warps spill (half the speed). TMA is neutral non-causal, -6% causal (run 6).
# d<=64: 128x128 with 4 warps and TMA K/V loads: 461 vs 407 with pointer loads.
# d=256: the fp32 accumulator alone is 128 KB at BLOCK_M=128, so both tiles are halved.
_FWD_TABLE = {
    (16, False): (128, 128, 4, 3, True), (16, True): (128, 128, 4, 3, True),
    (32, False): (128, 128, 4, 3, True), (32, True): (128, 128, 4, 3, True),
    (64, False): (128, 128, 4, 3, True), (64, True): (128, 128, 4, 3, True),
    (128, False): (128, 128, 8, 3, False), (128, True): (128, 128, 8, 3, False),
    (256, False): (64, 32, 4, 3, False), (256, True): (64, 32, 4, 3, False),
}
# Backward: dK/dV (BLOCK_M1, BLOCK_N1), dQ (BLOCK_M2, BLOCK_N2), num_warps, num_stages, tma.
# Each dK/dV program holds two fp32 accumulators of BLOCK_N1 x d. Run 6 (index prefetch on,
# N=4K, bwd-only TFLOP/s): d=128 best at 64x128 / 128x64, 8 warps, 3 stages, TMA (398, causal
# 357; 2 stages 370/321); d=64 best at 64x64 / 64x64, 4 warps, 3 stages, TMA (359, causal 325).
_BWD_TABLE = {
    16: (64, 64, 64, 64, 4, 3, True),
    32: (64, 64, 64, 64, 4, 3, True),
    64: (64, 64, 64, 64, 4, 3, True),
    128: (64, 128, 128, 64, 8, 3, True),
    256: (32, 64, 64, 32, 4, 2, False),
}


def fwd_config(head_dim_pad: int, block_size: int, dtype: torch.dtype, causal: bool = False) -> FwdConfig:
    if is_interpreted():
        # the interpreter runs whole tiles in numpy: the fewest, largest tiles are fastest
        return FwdConfig(block_size, block_size, 4, 1)
    bm, bn, warps, stages, tma = _FWD_TABLE[head_dim_pad, bool(causal)]
    if dtype == torch.float32:
        # fp32 ieee dots run on FMA units with twice the bytes per tile: keep tiles small
        bm, bn, warps, stages, tma = 64, 32, 4, 2, False
    return FwdConfig(_fit(bm, block_size), _fit(bn, block_size), warps, stages, tma)


def _dropout_stages(cfg):
    """Dropout's draws are interleaved through shared memory (the layout change of tl.join):
    one pipeline stage fewer keeps the kernel within the SM's shared memory (at d=128 the
    forward asked for 240 KB of 227 KB with 3 stages)."""
    return _replace(cfg, num_stages=max(1, min(cfg.num_stages, 2)))


def bwd_config(head_dim_pad: int, block_size: int, dtype: torch.dtype) -> BwdConfig:
    if is_interpreted():
        return BwdConfig(block_size, block_size, block_size, block_size, 4, 1)
    m1, n1, m2, n2, warps, stages, tma = _BWD_TABLE[head_dim_pad]
    if dtype == torch.float32:
        m1, n1, m2, n2, warps, stages, tma = 32, 64, 64, 32, 4, 2, False
    return BwdConfig(_fit(m1, block_size), _fit(n1, block_size),
                     _fit(m2, block_size), _fit(n2, block_size), warps, stages, tma)


def _flags(dtype: torch.dtype):
    upcast = is_interpreted()           # float64 dots there (tiles._dot says why)
    precision = "ieee" if dtype == torch.float32 else "tf32"
    return upcast, precision


# Tensor-descriptor (TMA) loads of the tiles the inner loops stream (K, V forward and dQ;
# Q, dO in dK/dV). None = as the config says; the probe forces True/False.
USE_TMA: Optional[bool] = None


def _tma_capable(*tensors: torch.Tensor) -> bool:
    """The copy engine needs Hopper+, a contiguous last dim and 16-byte aligned strides/base."""
    if is_interpreted():
        return all(t.stride(-1) == 1 for t in tensors)
    t0 = tensors[0]
    if not t0.is_cuda or torch.cuda.get_device_capability(t0.device)[0] < 9:
        return False
    for t in tensors:
        if t.stride(-1) != 1 or t.data_ptr() % 16:
            return False
        if any((s * t.element_size()) % 16 for s in t.stride()[:-1]):
            return False
    return True


def _use_tma(requested: Optional[bool], config_tma: bool, *tensors: torch.Tensor) -> bool:
    want = requested if requested is not None else (USE_TMA if USE_TMA is not None else config_tma)
    return bool(want) and _tma_capable(*tensors)


def _descriptors(use_tma: bool, rows: int, d_pad: int, *tensors: torch.Tensor):
    """4-D (B, H, N, d) descriptors with block [1, 1, rows, d_pad], or the tensors themselves."""
    if not use_tma:
        return tensors
    from triton.tools.tensor_descriptor import TensorDescriptor

    return tuple(TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, d_pad])
                 for t in tensors)


def _row_counts(row_ptr: torch.Tensor, cache: dict, table: str) -> np.ndarray:
    """Entries per row of the layout's forward (``table`` "fwd": ``fwd_ptr``, read by the
    forward and dQ kernels) or transposed ("bwd": ``bwd_ptr``, the dK/dV kernels') CSR table,
    int64 on the host: copied from the device once per layout, table and device (``cache``, the
    layout's schedule cache), then shared by the launch orders and the persistent rule."""
    key = ("row_counts", table, str(row_ptr.device))
    if key not in cache:
        cache[key] = np.diff(row_ptr.cpu().numpy().astype(np.int64))
    return cache[key]


def _launch_order(row_ptr: torch.Tensor, cache: Optional[dict], *, kind: str, batch: int,
                  num_heads: int, group: int, per_head: bool, num_tiles: int, tile: int,
                  block_size: int, reverse: bool, first_pos: int = 0) -> Optional[torch.Tensor]:
    """Launch order (int32 ``bh * num_tiles + tile`` per program) putting heavy tiles first.

    A tile is heavy when it walks more than twice the mean number of blocks (the rows or
    columns of global tokens). Started in natural order, such a tile of the last head begins
    near the end of the grid and runs alone long after the rest: a tail. Heavy tiles go
    first, longest first; the others keep the natural order (one head's tiles together).
    Returns None (natural 2-D grid) when nothing is heavy, or without a ``cache`` (a dict the
    caller keeps per layout; building the order reads the table on the host once).
    """
    if cache is None:
        return None
    key = (kind, str(row_ptr.device), batch, num_heads, group, num_tiles, tile, reverse, first_pos)
    if key in cache:
        return cache[key]
    counts = _row_counts(row_ptr, cache, "bwd" if kind == "dkdv" else "fwd")
    table_heads = num_heads if per_head else 1
    counts = counts.reshape(table_heads, -1)                         # [table_heads, rows]
    # local table row of each tile (tiles are aligned to absolute positions from first_pos)
    rows = ((first_pos // tile + np.arange(num_tiles)) * tile) // block_size - first_pos // block_size
    work = counts[np.arange(num_heads) % table_heads][:, rows]       # [num_heads, num_tiles]
    work = work.reshape(num_heads // group, group, num_tiles).sum(1)  # per kv head for dK/dV
    if reverse:
        work = work[:, ::-1]
    tiles = np.arange(num_tiles)[::-1] if reverse else np.arange(num_tiles)
    bh = np.arange(batch * work.shape[0])
    natural = (bh[:, None] * num_tiles + tiles[None, :]).ravel()
    work = np.tile(work, (batch, 1)).ravel()
    heavy = work > 2 * max(work.mean(), 1.0)
    order = None
    if heavy.any():
        first = natural[heavy][np.argsort(-work[heavy], kind="stable")]
        order = torch.from_numpy(np.concatenate([first, natural[~heavy]]).astype(np.int32))
        order = order.to(row_ptr.device)
    cache[key] = order
    return order


def _no_order(layout) -> bool:
    """Natural launch order: several sequences, or tables built on the device (reading them
    on the host to find heavy rows would wait for the device)."""
    return layout.num_seqs > 1 or layout.on_device


def _grid(order: Optional[torch.Tensor], num_tiles: int, num_bh: int):
    if order is not None:
        return (order.numel(),)
    if num_bh > 65535:
        raise ValueError(f"batch * heads = {num_bh} exceeds the grid's 65535 limit")
    return (num_tiles, num_bh)


def _cdiv(a: int, b: int) -> int:
    # triton.cdiv is a constexpr_function in Triton 3.6: ~5 us of host time per call here
    return -(-a // b)


def _head_dim_pad(d: int) -> int:
    return max(16, 1 << (d - 1).bit_length())


class _Launch:
    """One kernel launch resolved once: kernel, grid, launch options and every argument after
    the per-call tensors (ints, floats, constexprs, in the kernel's signature order).

    The first :meth:`__call__` goes through Triton's ``JITFunction`` (which specialises,
    compiles or fetches the binary) and keeps the binary it returns; later calls hand the
    arguments straight to that binary's launcher. ``JITFunction.run`` re-binds and
    re-specialises ~40 arguments per launch, tens of microseconds of host time that short
    rows cannot hide (benchmarks/NOTES.md, runs 12–14). Sound only because the caller keys
    each ``_Launch`` by everything the specialisation reads: dtypes, every int argument
    (shapes, strides, tile counts) and 16-byte alignment of every pointer (the callers cache
    a ``_Launch`` only when all per-call tensors are aligned). Launch hooks (profilers), the
    interpreter and a current device other than the tensors' take the JIT path every time.
    """

    __slots__ = ("kernel", "grid", "tail", "num_warps", "num_stages", "cached", "binary", "options",
                 "descs", "direct")

    def __init__(self, kernel, grid, num_head_args: int, tail, num_warps: int, num_stages: int,
                 cached: bool, fp_fusion: bool = True, descs=None, **constexprs):
        """``descs``: {head position: descriptor template (no base), or a function that builds
        one from the first call's base tensor}. At those positions the caller passes the base
        tensor; the launch puts it into the template (:class:`_DirectLaunch` on the cached
        path)."""
        names = kernel.arg_names[num_head_args + len(tail):]
        self.kernel = kernel
        self.grid = tuple(grid) + (1,) * (3 - len(grid))
        self.tail = tuple(tail) + tuple(constexprs.pop(n) for n in names)
        if constexprs:
            raise TypeError(f"{kernel.__name__}: unknown constexprs {sorted(constexprs)}")
        self.num_warps, self.num_stages = num_warps, num_stages
        self.cached = cached and not is_interpreted()
        self.binary = None
        self.direct = None
        self.descs = dict(descs or {})
        # fp_fusion=False: no multiply-add contraction, so a product is rounded the same way
        # wherever it is recomputed (the NATURAL softmax relies on it); the interpreter never fuses
        self.options = {} if fp_fusion or is_interpreted() else {"enable_fp_fusion": False}

    def _described(self, head):
        """``head`` with each ``descs`` position's base tensor put into its template."""
        if not self.descs:
            return head
        head = list(head)
        for pos, template in self.descs.items():
            if callable(template):
                template = self.descs[pos] = _rebased(template(head[pos]), None)
            head[pos] = _rebased(template, head[pos])
        return head

    def __call__(self, device_index, *head):
        binary = self.binary
        if binary is not None and _no_launch_hooks() and torch.cuda.current_device() == device_index:
            g = self.grid
            if self.direct is not None:
                self.direct(g, _current_stream(device_index), head, self.tail)
            else:
                binary.run(g[0], g[1], g[2], _current_stream(device_index), binary.function,
                           binary.packed_metadata, None, None, None, *self._described(head),
                           *self.tail)
            return
        compiled = self.kernel[self.grid](*self._described(head), *self.tail,
                                          num_warps=self.num_warps, num_stages=self.num_stages,
                                          **self.options)
        if self.cached and binary is None and torch.cuda.current_device() == device_index:
            self.binary = compiled
            self.direct = _DirectLaunch.of(compiled, len(head), self.descs) if self.descs else None

    def run(self, stream: int, *head) -> None:
        """Launch the cached binary on ``stream``; the caller has checked that it exists, that
        no launch hooks are set and that the current device is the plan's."""
        if self.direct is not None:
            self.direct(self.grid, stream, head, self.tail)
            return
        binary, g = self.binary, self.grid
        binary.run(g[0], g[1], g[2], stream, binary.function, binary.packed_metadata, None, None,
                   None, *self._described(head), *self.tail)


class _DirectLaunch:
    """The cached launch of a binary with tensor-descriptor arguments, straight into Triton's
    C launcher with each descriptor's filled TMA map kept by base address.

    Through ``binary.run`` every launch re-fills each descriptor's 128-byte TMA map
    (``make_tensordesc_arg``, a driver call; 3-4 µs each on run34's H100 host, 11 per
    backward) and walks every argument in Python (``wrap_handle_tensordesc``). A map depends
    only on the base address and on the template's shape, strides, block and layout, which
    the plan's key fixes, so the same address gives the same map: this keeps the maps of
    the last few addresses per position (a training loop's caching allocator hands the same
    addresses back). Built from the launcher's own closure (Triton 3.6's
    ``CudaLauncher.launch``, ``wrap_handle_tensordesc``'s ``inner``); where that shape is not
    found, or the kernel needs scratch memory, :meth:`of` returns None and the launch goes
    through ``binary.run``."""

    __slots__ = ("c_launch", "base", "positions", "templates", "metas", "maps")
    _KEEP = 8        # addresses kept per descriptor position

    @classmethod
    def of(cls, binary, head_len: int, descs: dict):
        try:
            from triton.backends.nvidia import driver as nvidia
        except ImportError:
            return None
        run = getattr(binary, "run", None)
        inner = getattr(run, "launch", None)
        code = getattr(inner, "__code__", None)
        if (code is None or getattr(run, "global_scratch_size", 1) or getattr(run, "profile_scratch_size", 1)
                or not hasattr(nvidia, "make_tensordesc_arg")):
            return None
        cells = dict(zip(code.co_freevars, (c.cell_contents for c in inner.__closure__ or ())))
        if not {"launcher", "tensordesc_indices", "tensordesc_meta"} <= cells.keys():
            return None
        positions = sorted(cells["tensordesc_indices"])
        if positions != sorted(descs) or any(p >= head_len for p in positions):
            return None
        self = cls()
        self.c_launch = cells["launcher"]
        self.base = (run.launch_cooperative_grid, run.launch_pdl, None, None, binary.function,
                     binary.packed_metadata)
        self.positions = positions
        self.templates = [descs[p] for p in positions]
        self.metas = list(cells["tensordesc_meta"])
        self.maps = [{} for _ in positions]
        return self

    def expanded(self, head, tail):
        """The C launcher's kernel arguments: ``head`` with each descriptor position's base
        tensor replaced by its map's arguments (map, shape, strides), then ``tail``."""
        from triton.backends.nvidia.driver import make_tensordesc_arg

        args = list(head)
        for i in range(len(self.positions) - 1, -1, -1):     # from the last, so indices hold
            pos = self.positions[i]
            t = args[pos]
            meta = self.metas[i]
            if meta is None:
                # no TMA map to fill: the descriptor's base tensor itself goes through (so
                # nothing is kept, which would hold the tensor alive)
                args[pos:pos + 1] = make_tensordesc_arg(_rebased(self.templates[i], t), None)
                continue
            ptr = t.data_ptr()
            maps = self.maps[i]
            filled = maps.get(ptr)
            if filled is None:
                if len(maps) >= self._KEEP:
                    maps.clear()
                filled = maps[ptr] = make_tensordesc_arg(_rebased(self.templates[i], t), meta)
            args[pos:pos + 1] = filled
        args.extend(tail)
        return args

    def __call__(self, grid, stream: int, head, tail) -> None:
        coop, pdl, scratch, profile, function, packed = self.base
        self.c_launch(grid[0], grid[1], grid[2], stream, function, coop, pdl, scratch, profile,
                      packed, None, None, None, *self.expanded(head, tail))


def _no_launch_hooks() -> bool:
    """No launch hook (a profiler such as proton) is registered: the launcher may skip them.

    Triton 3.6 keeps the hooks as ``HookChain`` objects (never None); anything else that
    was assigned there counts as a hook.
    """
    rt = _knobs.runtime
    return not getattr(rt.launch_enter_hook, "calls", True) and not getattr(rt.launch_exit_hook, "calls", True)


def _current_stream(device_index: int) -> int:
    from triton.runtime import driver

    global _current_stream
    _current_stream = driver.active.get_current_stream     # the raw-stream getter Triton uses
    return _current_stream(device_index)


def _aligned(*tensors: torch.Tensor) -> bool:
    """Every pointer 16-byte aligned: the one pointer property Triton specialises on."""
    bits = 0
    for t in tensors:
        bits |= t.data_ptr()
    return not bits & 15


def _rebased(desc, base):
    """A copy of a tensor descriptor on another base tensor (None: a template).

    ``TensorDescriptor.__init__`` re-validates shape, strides and alignment (several
    microseconds each); the plan validated them for its key and the caller checked
    alignment, so only the base changes.
    """
    copy = object.__new__(type(desc))
    copy.__dict__.update(desc.__dict__)
    copy.base = base
    return copy


def _templates(sources):
    """What a plan keeps of the tensor descriptors it was built with: copies without their
    base tensor (a plan lives as long as its layout and must not keep inputs alive), or
    None where the kernel takes plain tensors."""
    if not sources or not isinstance(sources[0], _descriptor_class()):
        return None
    return tuple(_rebased(desc, None) for desc in sources)


def _by_base(templates, *positions: int):
    """A ``_Launch``'s ``descs`` for a portable kernel's descriptor templates (None: the kernel
    takes plain tensors there) at these head positions."""
    return None if templates is None else dict(zip(positions, templates))


def _descriptor_class():
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor


_PLAN_LIMIT = 256     # launch plans kept per layout (distinct shapes/strides/dtypes)
_NO_PLANS: dict = {}  # read-only stand-in for a layout that has no plans yet
# Cache launch plans (and launch their binaries directly). The probe turns it off to measure
# what the cache saves; with False every launch goes through Triton's JITFunction.
CACHE_PLANS = True


def _store(cache: dict, key, plan) -> None:
    plans = cache.setdefault("plans", {})
    if len(plans) >= _PLAN_LIMIT:
        plans.clear()
    plans[key] = plan


def _num_tiles(seqs: np.ndarray, pos_col: int, len_col: int, tile: int) -> int:
    """Programs per slot along one axis: the most tiles (aligned to absolute positions) any
    sequence's tokens touch."""
    pos, length = seqs[:, pos_col], seqs[:, len_col]
    counts = np.where(length > 0, -(-(pos + length) // tile) - pos // tile, 0)
    return int(counts.max(initial=0))


def _geometry(layout, q: torch.Tensor, kpm: Optional[torch.Tensor]):
    """The kernels' scalar arguments and constexprs that describe the layout's sequences,
    windows and padding (everything but the tables and tensors)."""
    s0 = layout.seqs[0]
    window = layout.window or (-1, -1)
    slots = layout.num_seqs if layout.packed else q.shape[0]
    scalars = (kpm.stride(0) if kpm is not None else 0, int(s0[1]), int(s0[3]), int(s0[4]),
               int(s0[5]), int(s0[8]), int(s0[9]), int(layout.table_heads > 1),
               max(window[0], 0), max(window[1], 0))
    constexprs = dict(CAUSAL=layout.causal, HAS_WL=window[0] >= 0, HAS_WR=window[1] >= 0,
                      HAS_KPM=kpm is not None, PER_SEQ=layout.num_seqs > 1, PACKED=layout.packed)
    return slots, scalars, constexprs


def _kpm_arg(kpm: Optional[torch.Tensor], fallback: torch.Tensor) -> torch.Tensor:
    return fallback if kpm is None else kpm


def _natural(scale: float) -> bool:
    """Softmax in natural units (``NATURAL``) above :data:`NATURAL_SCALE`.

    In base 2 the backward recomputes a probability as ``exp2(scale * log2(e) * q.k - lse2)``
    from a natural-log LSE converted back to base 2. At a huge scale the scores are huge and
    those conversions, rounded in fp32, move the row max's exponent by several units (at scale
    1e8, dv erred by 12%). In natural units the max is subtracted before any rounding
    multiply, so its exponent is exactly 0; it costs a multiply per score, so typical scales
    (1/sqrt(head_dim)) keep base 2."""
    return scale > NATURAL_SCALE


NATURAL_SCALE = 4.0


def _env_number(name: str, default, kind=float):
    """The environment variable ``name`` read as ``kind`` (float or int), ``default`` where it
    is not set; a value that is not such a number is refused, naming the variable."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"environment variable {name} must be {what}, got {raw!r}") from None


# Score-modifier variants (private; for A/B benchmarks, benchmarks/parity.py --variants).
# Read at every call and part of the launch-plan keys; never change them between a forward and
# its backward. The dropout draw variant lives in sparseflash.philox (DROPOUT_BITS, _MAPPING,
# _ROUNDS), shared with the torch backend.
#   ALIBI_VARIANT "column" (default): causal layouts in base 2 add only the per-column term
#       slope*(u - R) (one add per score, contracted into the scale's FMA) and move the per-row
#       term into the LSE (kernels/tiles.py, _log2_scores); other calls fall back to "abs".
#     "abs": -slope*|t - u| per score (subtract, abs, FMA).
#   SOFTCAP_VARIANT "folded" (default): scale/softcap folded on the host into the tanh argument
#       (one multiply), and in the forward without ALiBi the row max taken over tanh so that
#       cap*tanh - max is one FMA inside exp2. "plain": scale, then * (1/cap), tanh, * cap.
ALIBI_VARIANT = os.environ.get("SPARSEFLASH_ALIBI_VARIANT", "column")
SOFTCAP_VARIANT = os.environ.get("SPARSEFLASH_SOFTCAP_VARIANT", "folded")
# How the Hopper kernels compute dropout's draws (the same bits in every form; kernels/hopper.py
# ``_dropout_words``): bit 0 runs Philox's 32x32 products as one mul.wide.u32 each (IMAD.WIDE)
# instead of tl.philox's umulhi and mul (IMAD.HI + IMAD); bit 1 zeroes the forward's dropped
# probabilities with an explicit compare and select on fp32 (PTX setp/selp) instead of a
# gl.where that LLVM moves past the conversion to 16 bits; bit 2 makes the dK/dV kernel's draws
# (16-bit quad mapping; ignored otherwise) once a step's first products are issued, before its
# wait for S^T, held as Philox's words (stop 55, slower; docs/hopper.md "The dK/dV kernel's draws
# made early"); bit 3 is unused (stop 61's Philox work of loop-invariant counters done before
# the step loops was slower and was removed: docs/hopper.md "Dropout's dK/dV step, two cuts");
# bit 4 (the default since stop 61) computes the dK/dV kernel's dS^T as
# P^T where(P^T > 0, dP^T scale - delta, delta), one instruction a score fewer than the default
# |P^T| (where(P^T > 0, dP^T scale, 0) - delta) and rounded once where that rounds twice (the only
# bit that changes results, in dK and dQ's last bits); bit 5 (stop 63) converts the dK/dV
# kernel's dV operand max(P^T, 0) to 16 bits by one cvt.rn.relu a pair (the max folded into
# the conversion: one instruction a score fewer; the same bits) and writes dS^T's select in
# PTX. Not the default: on an H100 form 51 made the dense causal backward 2.1-2.2% slower and
# the local(8)|global one 0.7-1.8% faster (run44-stop63, docs/hopper.md).
# 0-63 without bit 3; SPARSEFLASH_HOPPER_DROPOUT_FORM. (Stop 53's bit 2, the forward's draws made while a
# step's products run, was slower on an H200 and was removed: the same section.)
HOPPER_DROPOUT_FORM = _env_number("SPARSEFLASH_HOPPER_DROPOUT_FORM", 19, int)


def _variants():
    """The variants in force (part of every launch-plan key)."""
    from ..philox import dropout_variant

    if ALIBI_VARIANT not in ("abs", "column"):
        raise ValueError(f"ALIBI_VARIANT must be 'abs' or 'column', got {ALIBI_VARIANT!r}")
    if SOFTCAP_VARIANT not in ("plain", "folded"):
        raise ValueError(f"SOFTCAP_VARIANT must be 'plain' or 'folded', got {SOFTCAP_VARIANT!r}")
    if (isinstance(HOPPER_DROPOUT_FORM, bool) or HOPPER_DROPOUT_FORM not in range(64)
            or HOPPER_DROPOUT_FORM & 8):
        raise ValueError(f"HOPPER_DROPOUT_FORM must be an integer in 0-63 without bit 3 (8, unused), "
                         f"got {HOPPER_DROPOUT_FORM!r}")
    return dropout_variant(), ALIBI_VARIANT, SOFTCAP_VARIANT, HOPPER_DROPOUT_FORM


def _hopper_dropout(code: int) -> int:
    """The Hopper kernels' HAS_DROPOUT constexpr: the portable kernels' code (0: no dropout)
    plus ``100000 * HOPPER_DROPOUT_FORM``."""
    return code + 100000 * HOPPER_DROPOUT_FORM if code else 0


def _dropout_code() -> int:
    """The kernels' HAS_DROPOUT constexpr when dropout is on: BITS * 1000 + MAPPING * 100 + ROUNDS
    (kernels/tiles.py, ``_keep``; MAPPING 0 "interleave", 1 "mma", 2 "quad")."""
    from ..philox import dropout_variant

    bits, mapping, rounds = dropout_variant()
    return bits * 1000 + mapping * 100 + rounds


def _mods(softcap: float, alibi: Optional[torch.Tensor], dropout_p: float, natural: bool,
          causal: bool, scale: float):
    """Tail arguments and constexprs of the score modifiers: softcap (in the scores' units),
    the ALiBi slopes' batch stride (0 for (heads,) slopes), dropout's keep threshold and scale;
    and ``qk_scale``, the multiplier of q.k (``scale * unit``, or ``scale / softcap`` with the
    folded softcap: see ``SOFTCAP_VARIANT``)."""
    from ..philox import dropout_scale, dropout_threshold

    unit = 1.0 if natural else _LOG2E
    tail = (softcap * unit, alibi.stride(0) if alibi is not None and alibi.dim() == 2 else 0,
            dropout_threshold(dropout_p) if dropout_p > 0 else 0,
            dropout_scale(dropout_p) if dropout_p > 0 else 1.0)
    cap = 0
    if softcap > 0:
        cap = 2 if SOFTCAP_VARIANT == "folded" else 1
    qk_scale = scale / softcap if cap == 2 else scale * unit
    alibi_code = 0
    if alibi is not None:
        alibi_code = 2 if (ALIBI_VARIANT == "column" and causal and not natural) else 1
    constexprs = dict(HAS_SOFTCAP=cap, HAS_ALIBI=alibi_code,
                      HAS_DROPOUT=_dropout_code() if dropout_p > 0 else 0, NATURAL=natural)
    return tail, constexprs, qk_scale


class _FwdPlan:
    """The forward's launch, its launch order (or None) and its TMA descriptor templates."""

    __slots__ = ("launch", "order", "descs", "hopper", "dynamic", "counter_len")

    def __init__(self):
        self.hopper = False
        self.dynamic = False
        self.counter_len = 1


def _fwd_plan(q, k, v, layout, fwd_ptr, kpm, *, scale, config, use_tma, schedule_cache, cached,
              softcap=0.0, alibi=None, dropout_p=0.0):
    B, H, N, d = q.shape
    Hkv = k.shape[1]
    block_size, causal = layout.block_size, layout.causal
    d_pad = _head_dim_pad(d)
    cfg = config or fwd_config(d_pad, block_size, q.dtype, causal)
    if dropout_p > 0 and config is None:
        cfg = _dropout_stages(cfg)
    upcast, precision = _flags(q.dtype)
    plan = _FwdPlan()
    tma = _use_tma(use_tma, cfg.tma, k, v)
    sources = _descriptors(tma, cfg.block_n, d_pad, k, v)
    plan.descs = _templates(sources)
    slots, geometry, constexprs = _geometry(layout, q, kpm)
    num_m_tiles = _num_tiles(layout.seqs, 4, 1, cfg.block_m)
    plan.order = None if _no_order(layout) else _launch_order(
        fwd_ptr, schedule_cache, kind="fwd", batch=B, num_heads=H, group=1,
        per_head=layout.table_heads > 1, num_tiles=num_m_tiles, tile=cfg.block_m,
        block_size=block_size, reverse=causal, first_pos=int(layout.seqs[0, 4]))
    out_strides = (H * N * d, N * d, d, 1)     # out is allocated contiguous
    natural = _natural(scale)
    mod_tail, mod_constexprs, qk_scale = _mods(softcap, alibi, dropout_p, natural, causal, scale)
    mod_constexprs["HAS_SOFTCAP"] = _portable_softcap(mod_constexprs["HAS_SOFTCAP"], softcap,
                                                      mod_constexprs["HAS_ALIBI"], q.dtype, natural)
    tail = (num_m_tiles, *q.stride(), *k.stride(), *v.stride(), *out_strides,
            geometry[0], H, H // Hkv, N, *geometry[1:], qk_scale, *mod_tail)
    plan.launch = _Launch(
        _fwd_kernel, _grid(plan.order, num_m_tiles, slots * H), 14, tail, cfg.num_warps,
        cfg.num_stages, cached, descs=_by_base(plan.descs, 1, 2), BLOCK=block_size, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        HEAD_DIM=d, HEAD_DIM_PAD=d_pad, REVERSE_M=causal, UPCAST=upcast, PRECISION=precision,
        USE_TMA=tma, SCHEDULED=plan.order is not None, fp_fusion=not natural, **constexprs,
        **mod_constexprs)
    return plan


# The Hopper (sm_90) forward (kernels/hopper.py, Gluon): None = wherever it applies
# (``_hopper_applies``); False forces the portable kernel, True refuses to fall back
# (benchmarks and GPU tests use it to be sure which kernel ran). SPARSEFLASH_HOPPER=0 in the
# environment sets False.
USE_HOPPER: Optional[bool] = None if os.environ.get("SPARSEFLASH_HOPPER", "1") != "0" else False
# The Hopper dK/dV kernel (kernels/hopper.py ``_hopper_dkdv_kernel``; with HOPPER_FUSED_DQ it
# computes dQ too, else the portable dQ kernel runs before it): the same None/False/True
# meaning; SPARSEFLASH_HOPPER_BWD=0 sets False.
USE_HOPPER_BWD: Optional[bool] = None if os.environ.get("SPARSEFLASH_HOPPER_BWD", "1") != "0" else False
# dQ inside the Hopper dK/dV kernel (kernels/hopper.py ``FUSED_DQ``), as FlashAttention-3
# computes it: each step's dS K is added to an fp32 accumulator by the copy engine, so no dQ
# kernel recomputes S and dP (5 block products a step instead of 4 + 3); the dQ kernel runs its
# prologue alone (delta, lse2). The same None/False/True meaning as USE_HOPPER_BWD, where the
# Hopper dK/dV kernel runs; SPARSEFLASH_FUSED_DQ=0 sets False. Not used when the backward is
# split (``dkdv_first``: dQ must be complete after the first part). dQ is then summed in an
# order that varies from run to run (fp32 adds of the key tiles): not bitwise deterministic.
HOPPER_FUSED_DQ: Optional[bool] = None if os.environ.get("SPARSEFLASH_FUSED_DQ", "1") != "0" else False
_HOPPER_TILE = 128
_HOPPER_BWD_STAGES = {64: 4, 128: 3}     # (Q, dO) ring depth of the dK/dV kernel
# ... with the fused dQ, whose dS^T and staging buffers take 64 KB more at d=128. 3 slots fit
# there (226 KB) but ran slower than 2 on an H200: dense 16K 11.68 against 9.57 ms, dense causal
# 6.85 against 4.73, local(8) 1.59 against 1.29; d=64 equal (3.20 / 3.19 ms, 2 slots),
# benchmarks/results/h200-hopper/run15-fused-dq/call2
_HOPPER_FUSED_STAGES = {64: 4, 128: 2}
# registers a consumer thread of the dK/dV kernel's worker consumer warpgroup takes, by layout.
# The first consumer (Gluon's default partition) keeps what the others leave: 480 minus this,
# beside the producer and writer warps' 24 (sm_90 SASS: setmaxnreg 248 at 232, 232 at 248).
# The causal kernel's comparison of key and query positions keeps 16 more registers live; at 232
# it spilled 53 stores (sm_90 SASS) and took 5.19 ms on dense causal 16K d=128 (an H200), at 240
# 33 stores and 4.39 ms (benchmarks/results/h200-hopper/run6-dkdv-dispatch/breakdown-regs). The
# non-causal one kept 232 until run24. Nsight Compute then found its worker warpgroup loading 14
# and storing 4 spilled words a step (the other none), the first loaded at the top of the step
# and waited on (4% of the stall samples), and the other warpgroup waiting for it where they
# meet. At 240 the two split the spills (with the rows read first, 10 and 3 local accesses a
# step, against 18 and 0 at 232 and 0 and 12 at 248) and forward+backward ran 1.022-1.036x
# faster on six non-causal d=128 cases, at 248 1.002-1.025x; d=64 unchanged (0.997-1.006x):
# benchmarks/results/h200-hopper/run24-bwd-profile, call 3.
_HOPPER_BWD_REGS = {"plain": 240, "causal": 240}
# The dK/dV kernel's consumers read a step's table entry (its query positions) once the step's
# first two products are issued, not before (its ROWS_LATE; with the statistics in shared
# memory, STATS_TMA, which the other mode's load of lse2 needs first). Read first, its address,
# a spilled register, held the products' issue back (run24: Nsight Compute put 4% of the stall
# samples there); read late, the sm_90 SASS of the d=128 kernel has fewer local-memory accesses
# in its step loops (non-causal 5 and 0 against 7 and 1, 10 and 3 in the kernel before; causal
# 5 and 2 against 7 and 3; folded softcap 30 and 23 against 42 and 26; dropout 25 and 37
# against 35 and 40; softcap with dropout 119 and 128 against 119 and 121; d=64 none either
# way). Timed forward+backward (run24 call 4, interleaved, 240 registers both): 1.9-2.0%
# faster on dense causal 4K and 16K, 1.3% on bigbird, within +-0.7% on the other d=128 cases,
# and 2% slower at d=64 (dense 4K, local(8)). None: at d=128 only; True / False: always / never
# (False is the order before; an A/B switch, in the plan-cache key).
HOPPER_BWD_ROWS_LATE: Optional[bool] = None


# The dK/dV consumers' full steps and masked steps as two loops (ROWS_LATE bit 2; a column's
# masked blocks come after its full ones in the table), the masking written into the second
# only. In one loop each step compares its counter with the column's full-step count, which
# ptxas spills: at d=128 causal the one loop's steps make 2-5 local-memory accesses, 23-30 with
# the folded softcap, against 0-1 and 4-7 in the split form's full-step loop, whose masked
# loop makes 37-40 and 69-75 (sm_90 SASS, ptxas 12.8). Timed (stop 58, an H100, run40 calls 2
# and 3, parity.py --variants, 16K causal; time with ÷ without, same run): the softcap's
# forward+backward overhead went 1.147 -> 1.132 and 1.159 -> 1.131 dense d=128, 1.168 -> 1.144
# and 1.171 -> 1.150 local(8)|global d=128, 1.232 -> 1.203 dense d=64 and 1.198 -> 1.167 local
# d=64; without options it was level or slower (0.997-1.025 forward+backward at d=128, the 8
# dense cases of hopper.py 0.987-1.029), and dropout's overhead went 1.345 -> 1.454 (its full
# loop spills more). None: split with the softcap when neither dropout nor ALiBi is on (ALiBi
# with the softcap not timed); True / False (env SPARSEFLASH_HOPPER_BWD_SPLIT_LOOPS=1 / 0):
# always / never; an A/B switch, in the plan-cache key.
HOPPER_BWD_SPLIT_LOOPS: Optional[bool] = {"0": False, "1": True}.get(
    os.environ.get("SPARSEFLASH_HOPPER_BWD_SPLIT_LOOPS", ""))


# An experiment (stop 63), never on by default: the dK/dV kernel's exponentials without the clamp
# that keeps a probability at most 1 (ROWS_LATE bit 4; kernels/hopper.py UNCLAMPED), one
# instruction a score fewer. Without the clamp a peaked softmax can overflow (issue 11's scale
# tests): this switch only measures what the clamp costs. On an H100 (run44-stop63) dropping it
# shortened the backward by at most 1.9% (16K causal, d=128 and 64), so the clamp stays.
_HOPPER_BWD_UNCLAMPED = False
# The causal ALiBi's row term in the stored lse2 (stop 64; ROWS_LATE bit 8, kernels/bwd.py
# FOLD_ROWS): the dQ kernel's statistics pass stores lse2 + slope log2(e) (t & 63) where the
# Hopper dK/dV kernel reads it, so that kernel's steps (whose first query R is a multiple of 64)
# no longer add slope (t - R) to their 64 values of lse2 (sm_90 SASS, a full d=128 causal step
# 543 / 550 -> 465 / 445 instructions, no spill store in the loop; plain 416 / 399). On an H100
# (benchmarks/results/h200-hopper/run45-stop64, 16K causal, forward+backward time with ALiBi ÷
# without, same process) it took dense 1.039 -> 1.004 and local(8)|global_blocks(1) 1.100 ->
# 1.068 at d=128, 1.095 -> 1.050 and 1.089 -> 1.058 at d=64. With it K/V in registers (d=64)
# no longer spill the loops and are taken as without ALiBi (_bwd_kv_regs), and so is the dK/dV
# output copy at d=128 (_bwd_out_tma, since stop 66).
# True (the default) / False; env
# SPARSEFLASH_HOPPER_BWD_ALIBI_FOLD=0 turns it off. In the plan-cache key.
HOPPER_BWD_ALIBI_FOLD: bool = os.environ.get("SPARSEFLASH_HOPPER_BWD_ALIBI_FOLD", "1") != "0"


# The dK/dV kernel with the folded softcap: its factor 1 - tanh^2 multiplied into P^T before
# dV's product is issued (ROWS_LATE bit 16; kernels/hopper.py CAP_EARLY), not after; the same
# products of the same values (dK, dV bit for bit). In sm_90 SASS (d=128 causal, the split
# loops, stop 68) the full-step loops went 537 -> 517 instructions and 7 / 4 -> 3 / 3 local
# accesses a step, the masked-step loops 69-75 -> 77-85; in the one loop the code is the same.
# On an H100 (benchmarks/results/h200-hopper/run49-stop68, parity.py --variants, 16K causal
# d=128) the backward took 1.6% (dense) and 2.5% (local(8)|global) less time (call 1); softcap
# 30's forward+backward overhead 1.103 against 1.130 dense and 1.147 against 1.171 local (call
# 2), level to 1% lower at d=64 (call 3), 1.104 / 1.117 and 1.153 / 1.164 on an H200 (call 5).
# None (the default): on with the softcap; False: off (env SPARSEFLASH_HOPPER_BWD_CAP_EARLY=0).
# In the plan-cache key.
HOPPER_BWD_CAP_EARLY: Optional[bool] = (None if os.environ.get("SPARSEFLASH_HOPPER_BWD_CAP_EARLY", "1") != "0"
                                         else False)


def _bwd_rows_late(d: int, options: Optional[Dict[str, int]] = None) -> int:
    """The dK/dV kernel's ROWS_LATE bits for head dim ``d`` and its option constexprs
    ``options`` (HAS_SOFTCAP, HAS_DROPOUT, HAS_ALIBI; absent or 0: off): 1, a step's table entry
    read after its first products (:data:`HOPPER_BWD_ROWS_LATE`); 2, the full and the masked
    steps as two loops (:data:`HOPPER_BWD_SPLIT_LOOPS`); 4, no clamp of the exponent
    (:data:`_HOPPER_BWD_UNCLAMPED`); 8, lse2 holds the causal ALiBi's row term
    (:data:`HOPPER_BWD_ALIBI_FOLD`, with HAS_ALIBI 2); 16, the softcap's factor taken into P^T
    before dV's product (:data:`HOPPER_BWD_CAP_EARLY`, with the softcap)."""
    late = d > 64 if HOPPER_BWD_ROWS_LATE is None else bool(HOPPER_BWD_ROWS_LATE)
    on = options or {}
    split = _switch("HOPPER_BWD_SPLIT_LOOPS")
    if split is None:
        split = bool(on.get("HAS_SOFTCAP")) and not on.get("HAS_DROPOUT") and not on.get("HAS_ALIBI")
    fold = _fold_alibi_rows(True, on)
    early = _switch("HOPPER_BWD_CAP_EARLY") is not False and bool(on.get("HAS_SOFTCAP"))
    return (int(late) | (2 if split else 0) | (4 if _HOPPER_BWD_UNCLAMPED else 0) | (8 if fold else 0)
            | (16 if early else 0))
# The queries of a dK/dV step with the fused dQ at d=64 (its BLOCK_M): 128 as FlashAttention-3/4
# step there, in two parts of 64 for the products (kernels/hopper.py ``MMA_M``, ``PARTS``) that
# share the step's slot of the ring (2 slots of 128 rows: 194 KB of shared memory), its meeting
# of the warpgroups, its dQ product and staging (half as many, twice the size), or 64. d=128
# and the unfused kernel keep 64 (at d=128 the ring would not fit). On an H200, forward+backward
# with 64 took 1.012-2.1% longer than with 128 on the seven d=64 cases of the peers table, in
# two calls (benchmarks/results/h200-hopper/run25-d64-steps, calls 1 and 2, interleaved); dK and
# dV are bit for bit the same. None: 128 at d=64 (with the fused dQ, without dropout with
# ALiBi); 64 / 128: that (128 only at d=64 with the fused dQ). In the plan-cache key;
# SPARSEFLASH_HOPPER_BWD_STEP_M sets it.
# With 128-query steps: each warpgroup's dQ product over its 64 of the step's queries and every
# column ([64, d] += dS[64, 128] K[128, d]; the kernel's DQ_ROWS) instead of every query and half
# the columns ([128, d/2]): the product reads less shared memory (dS 16 KB and K 16 KB a
# warpgroup, against 32 and 8 KB at d=64) in 8 instructions of N = 64 instead of 16 of N = 32.
# Forward+backward with the columns split took 1.017-1.038x as long as with the rows split on
# the seven d=64 cases (an H200, interleaved: benchmarks/results/h200-hopper/run25-d64-steps,
# call 5). None: on wherever the steps take 128 queries; False: the columns split; True: the
# same as None. In the plan-cache key.
HOPPER_BWD_DQ_ROWS: Optional[bool] = None
HOPPER_BWD_STEP_M: Optional[int] = (int(os.environ["SPARSEFLASH_HOPPER_BWD_STEP_M"])
                                    if os.environ.get("SPARSEFLASH_HOPPER_BWD_STEP_M") else None)


def _bwd_dq_rows(step_m: int) -> bool:
    """The dK/dV kernel's DQ_ROWS for steps of ``step_m`` queries (:data:`HOPPER_BWD_DQ_ROWS`)."""
    if not (HOPPER_BWD_DQ_ROWS is None or isinstance(HOPPER_BWD_DQ_ROWS, bool)):
        raise ValueError(f"HOPPER_BWD_DQ_ROWS must be None, True or False, got {HOPPER_BWD_DQ_ROWS!r}")
    return HOPPER_BWD_DQ_ROWS is not False and step_m > _HOPPER_TILE // 2


# At d=64: each consumer warpgroup holds its 64 keys of K and V in registers (16 + 16 a thread,
# loaded once a tile) as the A operands of S^T = K Q^T and dP^T = V dO^T (the kernel's KV_REGS).
# These M=64, N=64 products, with both operands in shared memory, read 4 KB an instruction of 32
# clocks at the tensor cores' rate: all that shared memory serves (128 bytes a clock). With A
# from registers they read half. Forward+backward on an H200, shared memory ÷ registers, same
# process (benchmarks/results/h200-hopper/run26-kv-regs): 1.026-1.049 on the seven d=64 peers
# cases (MHA), 1.055 and 1.069 with GQA 32/8 (dense causal, local(8)|global_blocks(1) at 16K),
# 1.005-1.023 with softcap, 1.006-1.008 with dropout (its loops spill: not taken), 1.018 and 0.876
# with the causal ALiBi's column form (not taken). Not at d=128 (64 registers more a thread,
# where the consumers spill already).
# The fused kernel takes KV_REGS 2 (the registers are not passed through the step's waits; its
# sm_90 SASS keeps them: tests/test_hopper.py's RS_CLOBBERED); the unfused kernel, whose loop
# ptxas then miscompiled (K's registers given to P^T), takes 1 (passed through the step's last
# wait) when forced.
# With the causal ALiBi's row term folded into lse2 (HOPPER_BWD_ALIBI_FOLD) it is taken: an H100
# (run45-stop64) measured forward+backward with ALiBi ÷ without 1.050 -> 1.017 (dense causal 16K)
# and 1.058 -> 1.027 (local(8)|global_blocks(1)), the folded rows in shared memory -> registers.
# None: the fused kernel at d=64 without dropout or the unfolded causal ALiBi; True: wherever
# d=64 (an A/B switch; the unfused kernel too); False: never. In the plan-cache key;
# SPARSEFLASH_HOPPER_BWD_KV_REGS=0 / 1 sets False / True.
HOPPER_BWD_KV_REGS: Optional[bool] = {"0": False, "1": True}.get(
    os.environ.get("SPARSEFLASH_HOPPER_BWD_KV_REGS", ""))


def _bwd_kv_regs(d: int, constexprs, fused_dq: bool) -> int:
    """The dK/dV kernel's KV_REGS (0: K and V in shared memory; 1, 2: in registers, passed
    through each step's last wait or not) for head dim ``d``, the score modifiers'
    ``constexprs`` and whether the kernel computes dQ (:data:`HOPPER_BWD_KV_REGS`)."""
    if not (HOPPER_BWD_KV_REGS is None or isinstance(HOPPER_BWD_KV_REGS, bool)):
        raise ValueError(f"HOPPER_BWD_KV_REGS must be None, True or False, got {HOPPER_BWD_KV_REGS!r}")
    if d != 64 or HOPPER_BWD_KV_REGS is False:
        return 0
    unfolded = constexprs["HAS_ALIBI"] == 2 and not _fold_alibi_rows(True, constexprs)
    if HOPPER_BWD_KV_REGS is None and (not fused_dq or constexprs["HAS_DROPOUT"] or unfolded):
        return 0
    return 2 if fused_dq else 1


def _bwd_step_m(d: int, fused_dq: bool, constexprs) -> int:
    """The dK/dV kernel's BLOCK_M (queries a step) for head dim ``d`` (:data:`HOPPER_BWD_STEP_M`).
    Dropout with ALiBi keeps 64: with 128 its step loops spill (sm_90 SASS: 3 local accesses a
    step in each consumer, 23 with softcap too; none with any one option or any other pair)."""
    if HOPPER_BWD_STEP_M not in (None, 64, 128):
        raise ValueError(f"HOPPER_BWD_STEP_M must be None, 64 or 128, got {HOPPER_BWD_STEP_M!r}")
    if d != 64 or not fused_dq or (constexprs["HAS_DROPOUT"] and constexprs["HAS_ALIBI"]):
        return _HOPPER_TILE // 2
    return 128 if HOPPER_BWD_STEP_M is None else HOPPER_BWD_STEP_M
# The dQ kernel's tile where the dK/dV kernel is the Gluon one: (BLOCK_M2, BLOCK_N2, num_warps,
# num_stages) by head dim; the portable dK/dV kernel shares _BWD_TABLE's warps and stages with
# the dQ kernel, the Gluon one does not. d=128 keeps _BWD_TABLE's tile (tuned in run 6 for both
# portable kernels together); d=64 takes 128x64 (was 64x64): 1.004-1.070x faster forward+backward
# on dense 4K, dense causal 4K and local(8) 16K in two samples, no other tile won at d=128
# (an H200, benchmarks/results/h200-hopper/run14-alibi, dq_sweep.py).
_HOPPER_DQ_TABLE = {64: (128, 64, 4, 3), 128: (128, 64, 8, 3)}
# The Hopper forward's pipeline: which of run30's forward settings apply where the switches
# below are None. "run30" (the default): at d=128 2 slots with K and V released separately
# (HOPPER_FWD_KV_SPLIT), and everywhere persistent CTAs with run-time tiles
# (HOPPER_DYNAMIC_TILES) and two Q buffers (HOPPER_FWD_Q_BUFFERS), the output through shared
# memory with three consumers too. "run29": the settings before run30 (3 K/V slots at d=128
# released whole; persistent CTAs only on short, even rows or with three consumers). On an
# H200 "run30" measured faster (benchmarks/results/h200-hopper/run30-kv-split: forward,
# "run29" ÷ "run30", two samples at d=128: local(2) 16K 1.106/1.116 and 64K 1.074/1.089,
# butterfly 1.052/1.052, bigbird(3,2,3) 1.048/1.042, strided(16)|local(1) 1.048/1.053,
# local(8) 1.052/1.025, the 34-43% cases and local(32) 64K 1.005-1.016, dense causal 4K
# 1.014/1.026, 8K 1.006/0.988, 16K 1.003/1.003, dense 4K 1.015/1.008, dense 16K 0.996/0.994;
# at d=64, one sample: dense 1.020-1.040, local(8) 1.034, bigbird(3,2,3) 1.072, local(28)
# 1.015). Made the default after run30 calls 5-9 (stop 47): tests/test_hopper.py and
# tests/test_parity.py on the GPU with it, 423 passed; compute-sanitizer memcheck 0 errors;
# benchmarks/hopper.py beside FA4, two samples: forward run29 / run30 1.000-1.118 on all 20
# cases, forward+backward 0.991-1.039 (one disturbed local(2) 16K row aside).
# SPARSEFLASH_HOPPER_FWD_PIPELINE=run29 sets the old one.
HOPPER_FWD_PIPELINE: Optional[str] = os.environ.get("SPARSEFLASH_HOPPER_FWD_PIPELINE") or None
_PIPELINES = ("run29", "run30")
# K/V ring depth of the Hopper forward by head dim (a slot holds a K and a V tile: 64 KB at
# d=128; with Q the 3 slots take 224 KB of the 227 KB limit). With the slot released whole,
# 3 slots beat 2 by 5-17% (run q2; run30 call 1: 2 joint slots 0.69-0.89x the speed of 3);
# released in two halves (HOPPER_FWD_KV_SPLIT), 2 slots ran level with 3 joint ones
# (0.97-1.03x, run30 calls 1-2), which leaves room for a second Q buffer: "run30" takes 2.
_HOPPER_STAGES = {64: 4, 128: 3}
_HOPPER_STAGES_RUN30 = {64: 4, 128: 2}
# The Hopper forward's K/V ring depth, overriding _HOPPER_STAGES for every head dim where it
# fits in shared memory beside the Q buffers (None: _HOPPER_STAGES, or _HOPPER_STAGES_RUN30 in
# the "run30" pipeline). For experiments.
HOPPER_FWD_STAGES: Optional[int] = None
# Q buffers of the Hopper forward (kernels/hopper.py Q_BUFS): with 2, a persistent CTA's
# producer copies the next tile's Q into the second while the consumers run this one (a CTA of
# one tile uses only the first). None: 2 where the forward is persistent in the "run30"
# pipeline, else 1.
HOPPER_FWD_Q_BUFFERS: Optional[int] = None
# How the Hopper forward's consumers give a K/V slot back (kernels/hopper.py KV_SPLIT): True,
# K once the step's Q K^T has completed and V once its P V has, on barriers of their own, so
# that the producer copies the next K a step earlier (as FlashAttention-3's separate K and V
# pipelines do); False, both once P V has completed. None: True at d=128 in the "run30"
# pipeline (its 2-slot ring), else False (at d=64, 4 slots, split ran level: 0.98-1.01x,
# run30 call 3).
HOPPER_FWD_KV_SPLIT: Optional[bool] = None
# How a consumer warpgroup arrives on a slot's "empty" barrier (kernels/hopper.py ``_release``):
# True, every thread (``cp.async.mbarrier.arrive.noinc``, the barrier counting 128 a warpgroup),
# as CUTLASS's consumer_release does; False, one thread (``mbarrier.arrive``), which Triton's
# shared-memory barrier analysis takes for a write of all shared memory and fences with a
# ``bar.sync`` of the warpgroup before it (sm_90 SASS: 3 a forward step against 1, 7 a dK/dV
# step against 5). None: False: timed slower at d=64 (forward 1.04-1.14x) and level at d=128
# (benchmarks/results/h200-hopper/run37-stop55, call 2; docs/hopper.md "Ring slots released by
# every thread"). Both kernels; SPARSEFLASH_HOPPER_RELEASE_ALL=1 turns it on.
HOPPER_RELEASE_ALL: Optional[bool] = True if os.environ.get("SPARSEFLASH_HOPPER_RELEASE_ALL") == "1" else None
# (consumer, producer) registers a thread of the Hopper forward takes, by consumer warpgroups
# (three: 4 warpgroups, 3 x 128 x 160 + 128 x 24 = 64512 of the SM's 65536)
_HOPPER_FWD_REGS = {2: (232, 40), 3: (160, 24)}
# The Hopper forward as a persistent kernel: one CTA per SM walks the query tiles in launch
# order, its producer loading the next tile's Q (into a second Q buffer where there is one) and
# K/V while the consumers finish the last one. None: in the "run29" pipeline where
# _persistent_default says so or with three consumers, in "run30" always; False: one CTA per
# tile; True: persistent; an int n > 0: persistent with at most n CTAs (tests use it to give
# each CTA many tiles). With one Q buffer a persistent CTA waits for each tile's Q (run30 call
# 2, d=128, persistent with fixed tiles and one Q ÷ one CTA per tile: bigbird(3,2,3) 0.83,
# dense causal 16K 0.73; with two Q buffers and run-time tiles 1.04 and 1.00).
HOPPER_PERSISTENT: Union[None, bool, int] = None
# How a persistent Hopper forward's CTAs get their tiles: False, every num_CTAs-th program of
# the launch order (fixed at launch); True, the first one fixed, then the next program of the
# launch order at run time from a counter in global memory (kernels/hopper.py DYNAMIC), so that
# uneven tiles balance across the SMs. None (the default): at run time with three consumer
# warpgroups (which then also run persistent), fixed elsewhere; at run time everywhere in the
# "run30" pipeline (with one Q buffer run-time tiles at d=128 had moved by -4% to +3%, run29).
# On an H200 (benchmarks/results/h200-hopper/run13-three-wg/call5, forward, two samples) persistent
# with run-time tiles against the default before: dense d=64 1.008-1.071x (causal 4K 1.068 and
# 1.071), d=128 and the sparse cases 0.96-1.02x (fixed tiles where persistent, else one CTA
# per tile).
HOPPER_DYNAMIC_TILES: Optional[bool] = None
# Where the producer publishes a run-time tile to the consumers (kernels/hopper.py
# ``_publish_tile``): "shared" (the default), a shared-memory slot beside each Q buffer, stored
# by the producer warp's 32 lanes; "global" (stop 52), slots after the tile counter in global
# memory, stored by one lane. Both are ordered by the Q buffer's mbarrier (release by the
# producer's arrive, acquire by the consumers' wait); compute-sanitizer's racecheck reports
# the shared slot's accesses as hazards (docs/hopper.md, "Tests") and does not look at global
# memory.
HOPPER_TILE_SLOT = os.environ.get("SPARSEFLASH_HOPPER_TILE_SLOT", "shared")
# The Hopper forward's output stored through each consumer warpgroup's Q slot in shared memory
# and one bulk (TMA) copy, where its 64 rows all belong to the tile (kernels/hopper.py OUT_TMA;
# a partial block keeps the masked register stores). Stored from the registers, a 64 x d tile
# takes 32 4-byte stores a thread, each touching 8 rows: run28's cycle stamps put that
# epilogue at 2.3 us a tile at d=128 (benchmarks/results/h200-hopper/run28-lpt-dynamic).
# None: on with two consumer warpgroups, or two Q buffers ("run30"). With three and one Q
# buffer the later release of Q made the dense forwards no faster (run28 call 3, forward time
# without ÷ with: 4K 1.003 and 1.002 causal, 16K 0.992 and 0.986 causal); with two Q buffers
# the next tile's Q no longer waits for it (run30 call 3, dense d=64, two Q buffers with ÷
# without the copy: 1.003, 1.010, 1.021, 1.003). True / False: always / never.
HOPPER_FWD_OUT_TMA: Optional[bool] = None
# The Hopper dK/dV kernel's dV and dK stored the same way, one after the other through each
# consumer warpgroup's V slot, where its 64 keys all belong to the tile (kernels/hopper.py
# _bwd_consumer OUT_TMA). It saves a fixed time per key tile but costs the step loops a few
# local-memory accesses at d=128 (sm_90 SASS, causal, 240 registers: 8+3 against 5+2 in the
# two consumers' loops). None: where the table's columns are short, at most
# _BWD_OUT_TMA_QUERIES queries on average (read on the host once per layout, as the launch
# orders: never for tables built on the device); run28 call 5, forward+backward, time
# without ÷ with: local(2) 16K and 64K 1.059 / 1.067, butterfly 1.036, strided(16)|local(1)
# 1.028, dense causal 4K 1.024 (d=128), bigbird(3,2,3) 1.022 / 1.010 (d=64), local(8)
# 1.001 / 1.022, dense causal 4K d=64 0.995; the longer columns 0.982-0.997 (dense, local(28),
# local(32) 64K, the 34-43% cases). Never with the unfolded ALiBi at d=128: there the copy took the causal
# step loops' local-memory accesses from 17+33 to 50+49 (sm_90 SASS; the non-causal abs form's
# 25+1 to 40+3), and run29 call 4 measured local(8)|global_blocks(1) causal 16K forward+
# backward 3.4% slower with it (1.477 against 1.429 ms; softcap 1.491 / 1.494, dropout 1.663 /
# 1.699, none 1.298 / 1.313 with / without). With the causal ALiBi's row term folded into lse2
# (HOPPER_BWD_ALIBI_FOLD, stop 64) the loops keep no spill (sm_90 SASS 467 / 457 instructions a
# step), and an H100 (run45-stop64) measured forward+backward with ALiBi ÷ without 1.068 ->
# 1.026 (local(8)|global_blocks(1) causal 16K, copy forced) and 1.004 -> 0.988 (dense causal
# 16K). Its GPU test passed in stop 66 (an H100, run47-stop66 call 1: tests/test_hopper.py
# test_hopper_dkdv_output_copy_equals_register_stores[d128-causal-4000-alibi], bit for bit
# against the register stores), so the folded causal ALiBi takes the table's rule at d=128 too;
# the abs form and the unfolded rows at d=128 never. True / False: always / never.
HOPPER_BWD_OUT_TMA: Optional[bool] = None
# With the output copy, the dK/dV consumers find their tile's coordinates again after the step
# loops (kernels/hopper.py OUT_TMA 2: the schedule entry and the sequence's bounds loaded once
# more) instead of holding them across the loops (OUT_TMA 1; stop 69). ptxas then allocates the
# loops' registers differently (sm_90 SASS, d=128 causal, local-memory accesses a step in the
# two consumers' loops: the folded softcap's full-step loops 3 / 32 -> 1 / 18 and masked-step
# loops 68 / 83 -> 69 / 72; without options 8 / 3 -> 3 / 13). On an H100
# (benchmarks/results/h200-hopper/run50-stop69 call 3, parity.py --variants, 16K causal
# local(8)|global d=128, 5 rounds, forward+backward held -> reloaded): 1.319 -> 1.305 ms without
# options, 1.522 -> 1.493 with softcap 30, 1.668 -> 1.667 with dropout 0.1 (register stores:
# 1.351, 1.514, 1.704). On the 10 cases of the peers table that take the copy (3 rounds),
# held ÷ reloaded was 0.994-1.029, median about 1.003 (bigbird(3,2,3) d=128 1.029): level
# within that call's noise, which three cases without the copy put at 0.987-0.997. True (the
# default) / False (env SPARSEFLASH_HOPPER_BWD_OUT_RELOAD=0: the coordinates held, the form
# before). In the plan-cache key.
HOPPER_BWD_OUT_RELOAD: bool = os.environ.get("SPARSEFLASH_HOPPER_BWD_OUT_RELOAD", "1") != "0"
_BWD_OUT_TMA_QUERIES = 3072
# The Hopper forward's softmax in a basic block of its own (kernels/hopper.py OVERLAP_PV), so
# that ptxas leaves the wait for the previous step's P V after the exponentials instead of
# moving it above them. None: at d=128 only; True / False: always / never
# (SPARSEFLASH_HOPPER_OVERLAP=0 sets False). On an H200 (benchmarks/results/h200-hopper/
# run12-rowsum/call5, forward time before / after) it gained 1.00-1.055x on 9 of the 11 d=128
# cases (dense causal 16K 1.055, local(32) 64K 1.037, dense 16K 1.022) and lost 0.94-0.97 on
# two short persistent ones; at d=64 0.955-1.007 (dense 16K 0.955).
HOPPER_FWD_OVERLAP: Optional[bool] = None if os.environ.get("SPARSEFLASH_HOPPER_OVERLAP", "1") != "0" else False
# The Hopper forward's conditional rescale (kernels/hopper.py RESCALE): a row's running max
# moves only when a tile's max exceeds it by more than this many powers of two, so that the
# output accumulator's products (64 a thread and step at d=128, 32 at d=64) are skipped,
# warp by warp, on the steps where no row of the warp moved. Probabilities are then at most
# 2**HOPPER_FWD_RESCALE before the final division (fp32 statistics, 16-bit P: 256 at 8).
# 0 rescales at every step (the kernel before). None: 8 at d=128, 0 otherwise. On an H200
# (benchmarks/results/h200-hopper/run19-rescale, two runs of the 17 peers cases, forward time
# at 0 / at 8): d=128 geomean 1.013 (0.988-1.043; butterfly 1.03/1.04, strided|local 1.02/1.02,
# dense 4K 1.02/1.02), d=64 0.991 (local(8) 0.97/0.97, bigbird 0.98/0.98): kept at d=128 only.
# SPARSEFLASH_HOPPER_FWD_RESCALE sets one value for every head dim.
HOPPER_FWD_RESCALE: Optional[float] = _env_number("SPARSEFLASH_HOPPER_FWD_RESCALE", None)
# The order in which the Hopper forward walks a row's key blocks (kernels/hopper.py WALK):
# "table" (the table's order: full blocks, then partial ones, each by ascending key),
# "descending" (last to first), "last-first" (the last block first, then the others in table
# order: a causal row starts at its diagonal) or "diagonal-first" (stop 67: the block nearest
# the tile's diagonal first, found in the row's entries at the tile's start, then the others in
# table order). None: "last-first" with the causal ALiBi, whose column term grows with the key
# (in table order the row max rises at nearly every step and the conditional rescale rarely
# skips), "diagonal-first" with the abs form (non-causal calls: its bias peaks at the diagonal,
# inside the row; in table order a row's max rises at each step up to it for the steep heads)
# where the rescale is conditional (d=128), else "table". Never other than "table" with three
# consumers. SPARSEFLASH_HOPPER_WALK sets it.
HOPPER_FWD_WALK: Optional[str] = os.environ.get("SPARSEFLASH_HOPPER_WALK") or None
_WALKS = {"table": 0, "descending": 1, "last-first": 2, "diagonal-first": 3}
# The Hopper forward's softmax with the folded softcap: scores are then bounded (|softcap *
# tanh| <= softcap), so a fixed shift can replace the running row max (kernels/hopper.py FIXED):
# no row max, no rescale, no statistics on the path from S to P. It applies where the shifted
# exponentials stay normal numbers far from overflow in fp32 and in the 16-bit P
# (``_hopper_softcap``: bfloat16 inputs, no ALiBi, softcap * log2(e) <= 90, i.e. softcap <=
# 62.4). None: there at d=128; True: there at any head dim; False: never
# (SPARSEFLASH_HOPPER_SOFTCAP_SHIFT=0). On an H200 (benchmarks/results/h200-parity/
# run23-softcap-shift, softcap 30, 16K causal, H=16, forward time with softcap / without, same
# run): d=128 dense 1.238 -> 1.173, local(8)|global 1.177 -> 1.121; at d=64 dense 1.36 -> 1.44
# (1.565 -> 1.655 ms), local 1.30 -> 1.27, so not by default at d=64.
HOPPER_SOFTCAP_SHIFT: Optional[bool] = (None if os.environ.get("SPARSEFLASH_HOPPER_SOFTCAP_SHIFT", "1") != "0"
                                        else False)
# The widest span of the folded softcap's log2 scores (2 * softcap * log2(e)) the fixed shift
# takes: its exponentials then lie in [2^(HI - span), 2^HI], HI = clamp(span - 100, 16, 64)
# (kernels/tiles.py ``_softcap_shift``), so at least 2^-116 (fp32's and bfloat16's normal
# numbers reach 2^-126).
_SOFTCAP_SHIFT_SPAN = 180.0


def _softcap_shift_bounded(code: int, softcap: float, alibi_code: int) -> bool:
    """Whether the scores are bounded as the fixed shift needs, whichever forward runs: the
    folded softcap (``code`` 2), no ALiBi, a span of at most :data:`_SOFTCAP_SHIFT_SPAN`."""
    return code == 2 and not alibi_code and 2.0 * softcap * _LOG2E <= _SOFTCAP_SHIFT_SPAN


# The portable forward's counterpart (kernels/fwd.py FIXED): the same shift under the same
# bounds, with bfloat16 or float32 inputs (float32's P stays fp32), in base 2 (not the natural
# units of huge scales). None / True: there; False: never (SPARSEFLASH_SOFTCAP_SHIFT=0). On an
# H200 with the portable kernels throughout (run23-softcap-shift/call6, softcap 30, 16K causal,
# H=16, bf16, forward ms, fixed / running max): d=128 dense 2.434 / 2.500, local(8)|global
# 0.457 / 0.464; d=64 1.794 / 1.860 and 0.291 / 0.308.
SOFTCAP_SHIFT: Optional[bool] = None if os.environ.get("SPARSEFLASH_SOFTCAP_SHIFT", "1") != "0" else False


def _portable_softcap(code: int, softcap: float, alibi_code: int, dtype: torch.dtype,
                      natural: bool) -> int:
    """The portable forward's HAS_SOFTCAP constexpr: ``code``, plus 10 where the fixed shift
    (:data:`SOFTCAP_SHIFT`) applies."""
    if (_switch("SOFTCAP_SHIFT") is not False and not natural
            and dtype in (torch.bfloat16, torch.float32) and _softcap_shift_bounded(code, softcap, alibi_code)):
        return code + 10
    return code


# The Hopper forward with the softcap's fixed shift: 1 / HOPPER_SOFTCAP_EXP2_FMA of each
# tile's exponentials computed on the FMA pipe by a polynomial instead of the MUFU, which
# also runs the tanh (kernels/hopper.py ``_exp2_mixed``): 0 (the default), 2 or 4. On an H200
# (benchmarks/results/h200-hopper/run35-stop53, calls 1 and 3) a quarter was level with 0 in
# one call and took the forward's overhead down by 0.03-0.05 in the other; a half was slower.
# SPARSEFLASH_HOPPER_SOFTCAP_EXP2_FMA sets it.
HOPPER_SOFTCAP_EXP2_FMA = _env_number("SPARSEFLASH_HOPPER_SOFTCAP_EXP2_FMA", 0, int)


# The abs ALiBi form (HAS_ALIBI 1: non-causal calls, or ALIBI_VARIANT "abs") in the Hopper
# forward in raw-score units (stop 65; kernels/hopper.py HAS_ALIBI 3): the score is
# ``q.k - (slope / scale) |t - u|``, one subtract (|t - u| from a per-step row vector and a
# column vector made once) and one FMA a score, for any sign of the slope; the row max and
# exp2 then scale it as plain scores (one FMA). The portable formulation (tiles.py
# _log2_scores) converts the positions, multiplies q.k by the scale and the bias by the slope:
# a full d=128 step 767 instructions in sm_90 SASS, plain 491. Only without softcap and with a
# scale > 0 (the division). Its GPU oracle tests passed in stop 66 (an H100, run47-stop66), but
# the split by sides below (the default) was faster than it on three of four non-causal cases and
# level on the fourth; it applies only with HOPPER_FWD_ALIBI_SIDES off. True / False, env
# SPARSEFLASH_HOPPER_FWD_ALIBI_RAW=1 / 0. In the plan-cache key.
HOPPER_FWD_ALIBI_RAW: bool = os.environ.get("SPARSEFLASH_HOPPER_FWD_ALIBI_RAW", "0") == "1"

# The abs ALiBi form in the Hopper forward split by the sides of the diagonal (stop 66;
# kernels/hopper.py HAS_ALIBI 4): a step whose keys all lie at or before all its queries has
# ``-slope |t - u| = slope (u - t)``, one whose keys all lie at or after them ``slope (t - u)``,
# so each takes the causal column form (the key term in the scale's FMA, the query term in the
# row max: a full d=128 step 588 instructions in sm_90 SASS against 581 for the causal column
# form, 759 for the abs form and 491 plain); a step across the diagonal takes the abs form. Any
# sign of the slope. Not with softcap (its d=128 step loops then make 2 local accesses a step in
# sm_90 SASS; the abs form's none). Takes precedence over HOPPER_FWD_ALIBI_RAW. On an H100
# (benchmarks/results/h200-hopper/run47-stop66, 16K non-causal, time with ALiBi ÷ without, same
# process) the forward went 1.217 -> 1.130 (dense d=128), 1.192 -> 1.130 (local(8)|global_blocks(1)
# d=128), 1.310 -> 1.150 (dense d=64), 1.222 -> 1.070 (local d=64), the raw-unit form 1.153,
# 1.126, 1.221, 1.130; forward+backward 1.084 -> 1.066, 1.109 -> 1.094, 1.140 -> 1.085, 1.116 ->
# 1.073. The default since stop 66; True / False, env SPARSEFLASH_HOPPER_FWD_ALIBI_SIDES=1 / 0.
# In the plan-cache key.
HOPPER_FWD_ALIBI_SIDES: bool = os.environ.get("SPARSEFLASH_HOPPER_FWD_ALIBI_SIDES", "1") != "0"


def _hopper_fwd_alibi(mods, qk_scale: float) -> int:
    """The Hopper forward's HAS_ALIBI: the portable kernels' code, or for their abs form (1)
    without softcap 4, split by sides (:data:`HOPPER_FWD_ALIBI_SIDES`), or 3, in raw-score units
    (:data:`HOPPER_FWD_ALIBI_RAW`, ``qk_scale > 0``)."""
    if mods["HAS_ALIBI"] == 1 and not mods["NATURAL"] and not mods["HAS_SOFTCAP"]:
        if HOPPER_FWD_ALIBI_SIDES:
            return 4
        if HOPPER_FWD_ALIBI_RAW and qk_scale > 0:
            return 3
    return mods["HAS_ALIBI"]


def _hopper_softcap(code: int, softcap: float, alibi_code: int, dtype: torch.dtype, d: int) -> int:
    """The Hopper forward's HAS_SOFTCAP constexpr: the portable kernels' ``code``, plus 10 where
    the fixed shift (:data:`HOPPER_SOFTCAP_SHIFT`) applies, plus 100 times
    :data:`HOPPER_SOFTCAP_EXP2_FMA` there."""
    if HOPPER_SOFTCAP_EXP2_FMA not in (0, 2, 4):
        raise ValueError(f"HOPPER_SOFTCAP_EXP2_FMA must be 0, 2 or 4, got {HOPPER_SOFTCAP_EXP2_FMA!r}")
    switch = _switch("HOPPER_SOFTCAP_SHIFT")
    if (switch is not False and (switch or d == 128) and dtype == torch.bfloat16
            and _softcap_shift_bounded(code, softcap, alibi_code)):
        return code + 10 + 100 * HOPPER_SOFTCAP_EXP2_FMA
    return code


# Consumer warpgroups of the Hopper forward: 2 (a 128-query tile, 64 rows each) or 3 (a
# 192-query tile across two table blocks, as FlashAttention-3/4 run dense d=64). None: 3 at d=64
# where ``_fwd_consumers`` allows it, else 2; 2 / 3: always (3 raises where it cannot run).
# SPARSEFLASH_HOPPER_CONSUMERS=2 sets 2.
HOPPER_FWD_CONSUMERS: Optional[int] = (None if os.environ.get("SPARSEFLASH_HOPPER_CONSUMERS", "") != "2"
                                       else 2)


def _prefix_rows(fwd_ptr: torch.Tensor, fwd_idx: torch.Tensor, cache: dict, table_heads: int) -> bool:
    """Whether every row of the forward table is a prefix of the next row of its head (the
    same block indices in the same order, then possibly more): then the 64-query thirds of a
    192-query tile, whose rows are two neighbours, can share the lower row's copies (dense and
    causal tables are; sliding windows are not). Read on the host once per layout (``cache``)."""
    key = ("prefix_rows", str(fwd_ptr.device))
    if key not in cache:
        counts = _row_counts(fwd_ptr, cache, "fwd")
        ptr = np.concatenate([[0], np.cumsum(counts)])
        idx = fwd_idx.cpu().numpy().astype(np.int64)
        rows = counts.size // max(table_heads, 1)
        r = np.arange(counts.size - 1)
        r = r[(r + 1) % rows != 0]                       # pairs inside one head's rows
        ok = bool(np.all(counts[r] <= counts[r + 1]))
        if ok and r.size:
            n = counts[r]
            k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)   # position in row
            ok = bool(np.array_equal(idx[np.repeat(ptr[r], n) + k], idx[np.repeat(ptr[r + 1], n) + k]))
        cache[key] = ok
    return cache[key]


def _fwd_consumers(layout, d: int, fwd_ptr: torch.Tensor, fwd_idx: torch.Tensor,
                   cache: Optional[dict], kpm, softcap: float, alibi, dropout_p: float = 0.0) -> int:
    """The Hopper forward's consumer warpgroups (HOPPER_FWD_CONSUMERS). Three need tables read
    on the host (one sequence, not built on the device) whose rows are prefixes of their
    successors (``_prefix_rows``); by default they also run only at d=64 (at d=128 a thread's
    160 registers cannot hold the tiles) without softcap, ALiBi, key padding or token windows,
    whose extra registers spill at 160 (sm_90 SASS: 82, 74 and 183 spill stores), and without
    dropout, whose draws made three consumers slower (an H200, dense 16K d=64, p=0.1: forward
    0.86x, causal 0.81x the speed of two; benchmarks/results/h200-hopper/run13-three-wg/call4)."""
    switch = HOPPER_FWD_CONSUMERS
    if switch not in (None, 2, 3):
        raise ValueError(f"launch.HOPPER_FWD_CONSUMERS must be None, 2 or 3, got {switch!r}")
    if switch == 2:
        return 2
    if d != 64:
        reason = "head_dim is not 64"
    elif cache is None or _no_order(layout):
        reason = "tables not readable on the host (several sequences, built on the device, or no cache)"
    elif not _prefix_rows(fwd_ptr, fwd_idx, cache, layout.table_heads):
        reason = "a table row is not a prefix of the next"
    elif switch is None and (softcap or alibi is not None or kpm is not None
                             or layout.window is not None or dropout_p > 0):
        reason = "softcap, ALiBi, key padding, a token window or dropout"
    else:
        return 3
    if switch == 3:
        raise RuntimeError(f"launch.HOPPER_FWD_CONSUMERS=3 but the three-consumer forward cannot run: {reason}")
    return 2


def _switch(name: str) -> Optional[bool]:
    """The value of the module's None/True/False switch ``name``; anything else (1, 0, "yes")
    is refused, naming the switch."""
    value = globals()[name]
    if not (value is None or isinstance(value, bool)):
        raise ValueError(f"launch.{name} must be None, True or False, got {value!r}")
    return value


def _overlap_pv(d: int) -> bool:
    """Whether the Hopper forward puts its softmax in a block of its own (HOPPER_FWD_OVERLAP)."""
    switch = _switch("HOPPER_FWD_OVERLAP")
    return d == 128 if switch is None else switch


def _fwd_rescale(d: int) -> float:
    """HOPPER_FWD_RESCALE for head dim ``d``, validated: None (8 at d=128, else 0) or a number
    in [0, 15] (at 16, 16-bit P could reach 65536, past fp16's range)."""
    value = HOPPER_FWD_RESCALE
    if value is None:
        return 8.0 if d == 128 else 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 15:
        raise ValueError(f"launch.HOPPER_FWD_RESCALE must be a number in [0, 15] (powers of two), "
                         f"got {value!r}")
    return float(value)


def _walk(consumers: int, has_alibi: int, rescale: float) -> int:
    """The Hopper forward's WALK constexpr (HOPPER_FWD_WALK), validated; 0 (table order) with
    three consumers, whose shorter rows share a prefix of the walked one. By default
    "last-first" with the causal ALiBi (``has_alibi`` 2) and "diagonal-first" with the abs form
    (1) where the rescale is conditional (``rescale`` > 0, :func:`_fwd_rescale`: without it
    every step rescales whatever the walk)."""
    name = HOPPER_FWD_WALK
    if name is not None and name not in _WALKS:
        raise ValueError(f"launch.HOPPER_FWD_WALK must be None or one of {sorted(_WALKS)}, got {name!r}")
    if consumers != 2:
        return 0
    if name is None:
        name = {2: "last-first", 1: "diagonal-first" if rescale > 0 else "table"}.get(has_alibi, "table")
    return _WALKS[name]


def _hopper_applies(q, k, v, layout, *, scale, config, softcap, alibi, dropout_p) -> Optional[str]:
    """Why the Hopper forward cannot run this call (None: it can). The reasons are what the
    Gluon kernels leave to the portable one: dropout drawn in the "interleave" mapping, huge
    scales, other tiles and GPUs (softcap, ALiBi and dropout in the default "mma" mapping run in
    the Hopper kernels too; ``softcap`` and ``alibi`` are kept in the signature for the
    callers)."""
    from ..philox import dropout_variant

    if is_interpreted() or not q.is_cuda:
        return "not a CUDA tensor"
    if torch.cuda.get_device_capability(q.device)[0] != 9:
        return "not a Hopper GPU (sm_90)"
    if config is not None:
        return "an explicit portable config"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return "dtype is not fp16/bf16"
    if q.shape[-1] not in _HOPPER_STAGES:
        return "head_dim is not 64 or 128"
    if layout.block_size % _HOPPER_TILE:
        return "block_size is not a multiple of 128"
    if dropout_p > 0 and not dropout_variant()[1]:
        return "dropout in the 'interleave' mapping (portable kernel)"
    if _natural(scale):
        return "scale above NATURAL_SCALE, natural-unit softmax (portable kernel)"
    if not _tma_capable(q, k, v):
        return "strides or alignment the copy engine cannot take"
    try:
        from . import hopper  # noqa: F401
    except ImportError as e:          # a Triton without Gluon's Hopper support
        return f"Gluon unavailable ({e})"
    return None


def _forced(flag: Optional[bool], name: str, reason: Optional[str]) -> bool:
    """Whether a Hopper kernel runs, given its switch (None/False/True, see USE_HOPPER) and
    the reason it cannot (None: it can). True with a reason raises, naming both."""
    if reason is not None and flag:
        raise RuntimeError(f"{name}=True but the Hopper kernel cannot run: {reason}")
    return reason is None


def _use_hopper(q, k, v, layout, **kw) -> bool:
    if USE_HOPPER is False:
        return False
    return _forced(USE_HOPPER, "USE_HOPPER", _hopper_applies(q, k, v, layout, **kw))


def _gluon_descriptor(t: torch.Tensor, rows: int):
    """A 4-D (B, H, N, d) Gluon descriptor with block [1, 1, rows, d] in the swizzle the
    Hopper kernels' shared-memory tiles use."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    dt = gl.bfloat16 if t.dtype == torch.bfloat16 else gl.float16
    block = [1, 1, rows, t.shape[-1]]
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block,
                            gl.NVMMASharedLayout.get_default_for(block, dt))


def _pipeline() -> str:
    """HOPPER_FWD_PIPELINE, validated: None is "run30"."""
    name = HOPPER_FWD_PIPELINE or "run30"
    if name not in _PIPELINES:
        raise ValueError(f"launch.HOPPER_FWD_PIPELINE (SPARSEFLASH_HOPPER_FWD_PIPELINE) must be None "
                         f"or one of {_PIPELINES}, got {HOPPER_FWD_PIPELINE!r}")
    return name


def _dynamic_tiles(consumers: int) -> bool:
    """Whether a persistent Hopper forward with ``consumers`` consumer warpgroups takes its
    tiles at run time (HOPPER_DYNAMIC_TILES; None: with three, or in the "run30" pipeline)."""
    switch = _switch("HOPPER_DYNAMIC_TILES")
    return (consumers == 3 or _pipeline() == "run30") if switch is None else switch


def _persistent_default(layout, row_ptr: torch.Tensor, cache: Optional[dict]) -> bool:
    """Whether the "run29" Hopper forward runs persistent by default: where its tiles are short and
    even, at most 32 steps of 128 keys with none above 1.25x the mean. There one CTA per tile
    spends a large share of its time starting (Q's copy) and ending (the output's stores),
    which a persistent CTA overlaps with its next tile; with uneven tiles (causal, global
    rows) its fixed share of the tiles finishes late, where the hardware's own scheduling
    of one CTA per tile balances them. On an H200 (benchmarks/results/h200-hopper/
    run11-persistent): forward 1.03-1.11x on local(2), butterfly, strided and local(8) at
    d=64, 0.75x on dense causal 16K and 0.84x on bigbird. Like the launch order it reads the
    table on the host once per layout (``cache``), so never for tables built on the device."""
    if cache is None or _no_order(layout):
        return False
    key = ("persistent", str(row_ptr.device))
    if key not in cache:
        counts = _row_counts(row_ptr, cache, "fwd")
        steps = counts[counts > 0] * (layout.block_size // _HOPPER_TILE)
        cache[key] = bool(steps.size and steps.mean() <= 32 and steps.max() <= 1.25 * steps.mean())
    return cache[key]


def _hopper_descriptors(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Forward: q in blocks of 64 rows (one per consumer warpgroup), k and v of 128."""
    return (_gluon_descriptor(q, _HOPPER_TILE // 2), _gluon_descriptor(k, _HOPPER_TILE),
            _gluon_descriptor(v, _HOPPER_TILE))


def _hopper_fwd_plan(q, k, v, layout, fwd_ptr, fwd_idx, kpm, *, scale, schedule_cache, cached,
                     softcap=0.0, alibi=None, dropout_p=0.0):
    from .hopper import _hopper_fwd_kernel

    B, H, N, d = q.shape
    Hkv = k.shape[1]
    causal = layout.causal
    plan = _FwdPlan()
    sources = _hopper_descriptors(q, k, v)
    plan.descs = tuple(_rebased(desc, None) for desc in sources)
    slots, geometry, constexprs = _geometry(layout, q, kpm)
    consumers = _fwd_consumers(layout, d, fwd_ptr, fwd_idx, schedule_cache, kpm, softcap, alibi,
                               dropout_p)
    tile_m = 64 * consumers
    num_m_tiles = _num_tiles(layout.seqs, 4, 1, tile_m)
    plan.order = None if _no_order(layout) else _launch_order(
        fwd_ptr, schedule_cache, kind="fwd", batch=B, num_heads=H, group=1,
        per_head=layout.table_heads > 1, num_tiles=num_m_tiles, tile=tile_m,
        block_size=layout.block_size, reverse=causal, first_pos=int(layout.seqs[0, 4]))
    # the portable kernels' modifier arguments (never natural units here: _hopper_applies)
    mod_tail, mods, qk_scale = _mods(softcap, alibi, dropout_p, False, causal, scale)
    grid = _grid(plan.order, num_m_tiles, slots * H)
    num_programs = grid[0] * (grid[1] if len(grid) > 1 else 1)
    switch = HOPPER_PERSISTENT
    if switch is None:
        # "run29": three consumers persistent, with tiles handed out at run time
        # (HOPPER_DYNAMIC_TILES), and short even rows; "run30": always
        switch = (_pipeline() == "run30" or consumers == 3
                  or _persistent_default(layout, fwd_ptr, schedule_cache))
    if not isinstance(switch, (bool, int)) or (switch is not False and switch < 1):
        raise ValueError("launch.HOPPER_PERSISTENT must be None, a bool or a positive int (CTAs), "
                         f"got {HOPPER_PERSISTENT!r}")
    persistent = switch is not False
    plan.dynamic = persistent and _dynamic_tiles(consumers)
    if HOPPER_TILE_SLOT not in ("shared", "global"):
        raise ValueError(f"launch.HOPPER_TILE_SLOT must be 'shared' or 'global', got {HOPPER_TILE_SLOT!r}")
    q_buffers = _q_buffers(persistent)
    if persistent:
        ctas = torch.cuda.get_device_properties(q.device).multi_processor_count
        grid = (min(num_programs, ctas if switch is True else switch),)
    tail = (num_m_tiles, num_programs, H * N * d, N * d, d, geometry[0], H, H // Hkv, N,
            *geometry[1:], qk_scale, *mod_tail)
    # the run-time tiles' int32 counter, then (slots in global memory) each CTA's tile slots
    global_slot = plan.dynamic and HOPPER_TILE_SLOT == "global"
    plan.counter_len = 1 + (grid[0] * q_buffers if global_slot else 0)
    rescale = _fwd_rescale(d)           # the kernel's RESCALE, which the walk's default reads too
    plan.launch = _Launch(
        _hopper_fwd_kernel, grid, 16, tail, 4, 1, cached, PERSISTENT=persistent,
        # q, k, v and the output (o_desc, head position 15) by base tensor
        descs={0: plan.descs[0], 1: plan.descs[1], 2: plan.descs[2], 15: _out_template},
        DYNAMIC=(2 if global_slot else 1) if plan.dynamic else 0,
        BLOCK=layout.block_size, BLOCK_M=tile_m, BLOCK_N=_HOPPER_TILE, HEAD_DIM=d,
        NUM_STAGES=_fwd_stages(d, consumers, q_buffers), REVERSE_M=causal,
        SCHEDULED=plan.order is not None,
        CONSUMER_REGS=_HOPPER_FWD_REGS[consumers][0], PRODUCER_REGS=_HOPPER_FWD_REGS[consumers][1],
        OVERLAP_PV=_overlap_pv(d), RESCALE=rescale,
        NUM_CONSUMERS=consumers, WALK=_walk(consumers, mods["HAS_ALIBI"], rescale),
        HAS_SOFTCAP=_hopper_softcap(mods["HAS_SOFTCAP"], softcap, mods["HAS_ALIBI"], q.dtype, d),
        HAS_ALIBI=_hopper_fwd_alibi(mods, qk_scale),
        HAS_DROPOUT=_hopper_dropout(mods["HAS_DROPOUT"]),
        OUT_TMA=_out_tma(consumers, q_buffers), KV_SPLIT=_kv_split(d), Q_BUFS=q_buffers,
        RELEASE=bool(_switch("HOPPER_RELEASE_ALL")), **constexprs)
    plan.hopper = True
    return plan


def _bwd_out_tma(layout, bwd_ptr: torch.Tensor, cache: Optional[dict], alibi: int = 0,
                 d: int = 128) -> bool:
    """Whether the Hopper dK/dV kernel stores dK and dV through shared memory and bulk copies
    (HOPPER_BWD_OUT_TMA; None: where the table's non-empty columns hold at most
    ``_BWD_OUT_TMA_QUERIES`` queries on average, and not at d=128 with the abs ALiBi or the
    causal one's unfolded rows (``alibi``, the kernel's HAS_ALIBI: 1, or 2 without
    :data:`HOPPER_BWD_ALIBI_FOLD`))."""
    switch = _switch("HOPPER_BWD_OUT_TMA")
    if switch is not None:
        return switch
    folded = _fold_alibi_rows(True, {"HAS_ALIBI": alibi})
    if cache is None or _no_order(layout) or (alibi and d == 128 and not folded):
        return False
    key = ("bwd_out_tma", str(bwd_ptr.device))
    if key not in cache:
        counts = _row_counts(bwd_ptr, cache, "bwd")
        counts = counts[counts > 0]
        cache[key] = bool(counts.size and counts.mean() * layout.block_size <= _BWD_OUT_TMA_QUERIES)
    return cache[key]


def _bwd_out_mode(copy: bool) -> int:
    """The dK/dV kernel's OUT_TMA constexpr: 0, register stores; 1, the output copy with the
    tile's coordinates held across the step loops; 2, found again after them
    (:data:`HOPPER_BWD_OUT_RELOAD`)."""
    if not isinstance(HOPPER_BWD_OUT_RELOAD, bool):
        raise ValueError(f"HOPPER_BWD_OUT_RELOAD must be True or False, got {HOPPER_BWD_OUT_RELOAD!r}")
    return (2 if HOPPER_BWD_OUT_RELOAD else 1) if copy else 0


_COUNTERS: dict = {}        # (device index, stream) -> the run-time tiles' int32 counter
_COUNTERS_KEPT = 64


def _tile_counter(device: torch.device, length: int) -> torch.Tensor:
    """The Hopper forward's run-time tile counter (then, with global slots, the slots) for a
    launch on the current stream: zero at the start of each launch.

    The kernel leaves it at zero (its last increment sets it back, kernels/hopper.py
    ``_producer``), so one buffer a stream serves every launch on that stream in order, where
    a ``torch.zeros`` a call cost an allocation and a fill launch (30-50 µs of host time on
    run34's H100 host). Launches on different streams may overlap, hence one a stream. While
    the stream is being captured into a CUDA graph each call gets its own zeros (captured
    with the graph, whose replays may overlap on other streams)."""
    if torch.cuda.is_current_stream_capturing():
        return torch.zeros(length, dtype=torch.int32, device=device)
    key = (device.index, _current_stream(device.index))
    counter = _COUNTERS.get(key)
    if counter is None or counter.numel() < length:
        if len(_COUNTERS) >= _COUNTERS_KEPT:
            _COUNTERS.clear()    # (a dropped buffer's memory returns to its stream's pool)
        counter = _COUNTERS[key] = torch.zeros(max(length, 256), dtype=torch.int32, device=device)
    return counter


def _kv_split(d: int) -> bool:
    """Whether the Hopper forward releases a slot's K and V separately (HOPPER_FWD_KV_SPLIT;
    None: at d=128 in the "run30" pipeline)."""
    switch = _switch("HOPPER_FWD_KV_SPLIT")
    return (d == 128 and _pipeline() == "run30") if switch is None else switch


def _q_buffers(persistent: bool) -> int:
    """The Hopper forward's Q buffers (HOPPER_FWD_Q_BUFFERS: None for 2 where ``persistent``
    in the "run30" pipeline, else 1; or 1 or 2)."""
    value = HOPPER_FWD_Q_BUFFERS
    if value is None:
        return 2 if persistent and _pipeline() == "run30" else 1
    if isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2):
        raise ValueError(f"launch.HOPPER_FWD_Q_BUFFERS must be None, 1 or 2, got {value!r}")
    return value


def _fwd_stages(d: int, consumers: int, q_buffers: int = 1) -> int:
    """The Hopper forward's K/V ring depth (HOPPER_FWD_STAGES, else _HOPPER_STAGES or, in the
    "run30" pipeline, _HOPPER_STAGES_RUN30), refused
    where its slots and the consumers' Q tiles (``q_buffers`` each) pass the 227 KiB of shared
    memory a block has."""
    stages = HOPPER_FWD_STAGES
    if stages is not None and (isinstance(stages, bool) or not isinstance(stages, int) or stages < 2):
        raise ValueError(f"launch.HOPPER_FWD_STAGES must be None or an int >= 2, got {stages!r}")
    if stages is None:
        depth = (_HOPPER_STAGES_RUN30 if _pipeline() == "run30" else _HOPPER_STAGES)[d]
    else:
        depth = stages
    need = (2 * depth * _HOPPER_TILE + q_buffers * consumers * 64) * d * 2 + 1024
    if need > 227 * 1024:
        raise ValueError(f"launch.HOPPER_FWD_STAGES={stages} (a ring of {depth}) with {q_buffers} Q "
                         f"buffers needs {need} bytes of shared memory at head dim {d} with "
                         f"{consumers} consumers, past 227 KiB")
    return depth


def _out_tma(consumers: int, q_buffers: int = 1) -> bool:
    """Whether the Hopper forward stores its output through shared memory and a bulk copy
    (HOPPER_FWD_OUT_TMA; None: with two consumer warpgroups, or two Q buffers)."""
    switch = _switch("HOPPER_FWD_OUT_TMA")
    return (consumers == 2 or q_buffers == 2) if switch is None else switch


def _out_template(t: torch.Tensor):
    """The template of a Hopper kernel's descriptor on an output (blocks of a consumer's 64
    rows, for the OUT_TMA bulk stores), built from the plan's first call: the outputs (the
    forward's out, the backward's dK and dV) are allocated contiguous in the inputs' dtype,
    so the plan's key fixes it (a ``_Launch`` ``descs`` builder)."""
    return _gluon_descriptor(t, _HOPPER_TILE // 2)


def _use_hopper_bwd(do, q, k, v, layout, **kw) -> bool:
    if USE_HOPPER_BWD is False:
        return False
    reason = _hopper_applies(q, k, v, layout, **kw)
    if reason is None and not _tma_capable(do):
        reason = "dO strides or alignment the copy engine cannot take"
    if reason is None and q.shape[0] * q.shape[1] * q.shape[2] >= 2 ** 31:
        # the producer copies lse2/delta rows of the flat (B * H * N) statistics: int32 coordinates
        reason = "B * H * N of 2**31 rows or more (the statistics' copy coordinates are int32)"
    # By default it runs wherever it applies when its producer copies lse2/delta beside each
    # step's Q and dO (_stats_tma): it then beat the portable dK/dV kernel on every case
    # measured, d=64 and softcap included (an H200, benchmarks/bwd_breakdown.py, ms: dense 16K
    # d=128 6.48 against 8.77, dense causal 16K 2.92 / 4.46, dense 4K d=64 1.99 / 2.68, local(8)
    # 0.85 / 1.19; softcap 30 dense causal 3.41 / 5.35; dropout 0.1 dense causal 5.94 / 10.58:
    # benchmarks/results/h200-hopper/run8-dkdv-stats). Where 1-D copies cannot start aligned the
    # producer copies them with 4-byte asynchronous copies (_stats_mode). With the consumers
    # loading them (HOPPER_BWD_STATS="load") the kernel lost at d=64 (2.90 / 2.68 ms) and with
    # softcap (12.98 / 5.35 ms, spilling): those calls then take the portable kernel.
    if (reason is None and USE_HOPPER_BWD is None and _stats_mode(layout, q.shape[2]) == 0
            and (kw.get("softcap") or q.shape[-1] == 64)):
        reason = ("statistics rows not 16-byte aligned for the copy engine, with softcap or "
                  "head_dim 64 (the portable dK/dV kernel measured faster there)")
    return _forced(USE_HOPPER_BWD, "USE_HOPPER_BWD", reason)


def _stat_width(n: int, pad: int) -> int:
    """The length of a row of the backward's statistics: ``pad + n + pad`` fp32 values,
    rounded up to 4 (16-byte aligned rows for the copy engine)."""
    return -(-(n + 2 * pad) // 4) * 4


def _stat_rows(n: int, pad: int, device) -> torch.Tensor:
    """The backward's statistics buffer: 2 fp32 rows (lse2, delta) of :func:`_stat_width`."""
    return torch.empty((2, _stat_width(n, pad)), dtype=torch.float32, device=device)


def _bwd_workspace(plan, B: int, H: int, N: int, d: int, pad: int, device):
    """The backward's fp32 workspace in one allocation: the two statistics rows (lse2, delta;
    :func:`_stat_width` each, the statistic at offset ``pad``), then, for the fused dQ, its
    accumulator (``(B, H, pad + N, d)``: ``pad`` rows of padding before row 0). One
    ``torch.zeros`` where anything must start at zero (the fused dQ's sums; the statistics'
    masked rows that the Hopper copies read, ``plan.stats_tma``), else ``torch.empty``: one
    allocation and at most one fill a call, where there were up to two of each and five view
    operations (each a few µs of host time: run34's H100 host took 10-25 µs an allocation).
    Returns ``(work, lse2, delta, row1, dq_acc)``: the (B, H, N) views and, for the Hopper
    kernels' descriptors, the second row and the accumulator (None without the fused dQ) as
    1-D views starting there."""
    width = _stat_width(B * H * N, pad)
    fused = plan.hopper and plan.fused_dq
    size = 2 * width + (B * H * (pad + N) * d if fused else 0)
    alloc = torch.zeros if fused or plan.stats_tma else torch.empty
    work = alloc(size, dtype=torch.float32, device=device)
    stride = (H * N, N, 1)
    lse2 = work.as_strided((B, H, N), stride, pad)
    delta = work.as_strided((B, H, N), stride, width + pad)
    row1 = work[width:] if plan.hopper else None
    return work, lse2, delta, row1, (work[2 * width:] if fused else None)


def _stat_descriptor(row: torch.Tensor, rows: int):
    """A 1-D Gluon descriptor over a padded fp32 statistics row (:func:`_stat_rows`), block
    ``rows``: any start in the row, no stride to align; values past its end are zero-filled."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    return TensorDescriptor(row, [row.numel()], [1], [rows],
                            gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=1))


def _stats_tma(layout, n: int) -> bool:
    """Whether the Hopper dK/dV kernel's producer can copy its steps' lse2/delta rows (1-D
    descriptors): every copy must start 16 bytes aligned, i.e. at a multiple of 4 values. A
    step's start is ``pad + bh * N + (block-aligned position) + q_start - q_pos``: aligned for
    all steps iff N and every sequence's ``q_start - q_pos`` are multiples of 4. On an H200 an
    unaligned start faulted ("illegal instruction": packed documents of lengths 1, 300, 1, 520
    and 130, 300; 300, 520 ran). Otherwise the producer copies them with 4-byte asynchronous
    copies (:func:`_stats_mode`)."""
    seqs = np.asarray(layout.seqs)
    return n % 4 == 0 and bool(np.all((seqs[:, 0] - seqs[:, 4]) % 4 == 0))


# How the Hopper dK/dV kernel's consumers get each step's lse2/delta: None picks "tma" (1-D
# copies by the producer warp) where every copy starts aligned (_stats_tma), else "cpasync"
# (the producer's 4-byte asynchronous copies, any alignment, rows outside the sequence
# zero-filled); "load": the consumers load them from global memory (run7's kernel).
HOPPER_BWD_STATS: Optional[str] = None
_STATS_MODES = {"load": 0, "tma": 1, "cpasync": 2}


def _stats_mode(layout, n: int) -> int:
    """The dK/dV kernel's STATS_TMA constexpr (see HOPPER_BWD_STATS)."""
    mode = HOPPER_BWD_STATS
    if mode is None:
        return 1 if _stats_tma(layout, n) else 2
    if mode not in _STATS_MODES:
        raise ValueError(f"launch.HOPPER_BWD_STATS must be None or one of {sorted(_STATS_MODES)}, "
                         f"got {mode!r}")
    if mode == "tma" and not _stats_tma(layout, n):
        raise RuntimeError("HOPPER_BWD_STATS='tma' but the statistics rows are not 16-byte aligned "
                           "(N and every sequence's q_start - q_pos must be multiples of 4)")
    return _STATS_MODES[mode]


def _dq_descriptor(base: torch.Tensor, shape, rows: int = _HOPPER_TILE // 2):
    """The fused dQ's fp32 accumulator, (B, H, pad + N, d), as a descriptor with block
    [1, 1, rows, 32]: the kernel's staging tile (rows: its BLOCK_M; kernels/hopper.py
    ``_DQ_COLS``)."""
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    B, H, N, d = shape
    block = [1, 1, rows, 32]
    return TensorDescriptor(base, [B, H, N, d], [H * N * d, N * d, d, 1], block,
                            gl.NVMMASharedLayout.get_default_for(block, gl.float32))


def _fused_stages(d: int, constexprs, step_m: int = _HOPPER_TILE // 2) -> int:
    """The (Q, dO) ring depth of the dK/dV kernel with the fused dQ: at most 2 at d=128 with
    dropout, whose transposed mask also goes through shared memory (3 would need 234 KB), and
    2 with 128-query steps (``step_m``; 3 would need 226 KB with the larger dS^T buffers)."""
    stages = _HOPPER_FUSED_STAGES[d]
    if step_m > _HOPPER_TILE // 2:
        return 2
    return min(stages, 2) if d == 128 and constexprs["HAS_DROPOUT"] else stages


_DQ_CONVERT_BLOCK = 4096   # elements a program of the dQ conversion (16 KB of fp32 in)


def _dq_convert_launch(num_bh: int, n: int, d: int, pad_rows: int, scale: float,
                       cached: bool) -> "_Launch":
    """The fused dQ's conversion (bwd.py ``_dq_convert_kernel``): called with ``(device index,
    acc, dq)``, it writes ``dq = scale * acc[:, :, pad_rows:]`` in dq's dtype, for ``acc`` the
    contiguous fp32 ``(B, H, pad_rows + n, d)`` accumulator and ``dq`` contiguous ``(B, H, n,
    d)``, ``num_bh = B * H``."""
    grid = _grid(None, _cdiv(n * d, _DQ_CONVERT_BLOCK), num_bh)    # refuses num_bh > 65535
    return _Launch(_dq_convert_kernel, grid, 2, (scale, n * d, (pad_rows + n) * d, pad_rows * d), 4, 1,
                   cached, BLOCK=_DQ_CONVERT_BLOCK)


def _use_fused_dq(split: bool) -> bool:
    """Whether the Hopper dK/dV kernel (which runs this call) also computes dQ."""
    switch = _switch("HOPPER_FUSED_DQ")
    if switch is False:
        return False
    return _forced(switch, "HOPPER_FUSED_DQ",
                   "the backward is split (dkdv_first): dQ must be complete after the first part"
                   if split else None)


def _hopper_dkdv_plan(plan, q, k, v, do, stats, layout, bwd_ptr, geometry, constexprs, slots, *,
                      scale, qk_scale, mod_tail, schedule_cache, cached, fused_dq=False):
    """The dK/dV launch of the Hopper backward: 128-key tiles, 64-query steps (128 at d=64 with
    the fused dQ: :data:`HOPPER_BWD_STEP_M`). ``qk_scale``,
    ``mod_tail`` and the HAS_SOFTCAP/HAS_ALIBI constexprs are the portable kernels' (``_mods``).
    ``stats``: the padded (lse2, delta) rows (:func:`_stat_rows`, a [2, width] tensor) the dQ
    kernel writes, which the producer warp copies beside each step's Q and dO tiles.
    ``fused_dq``: the kernel also adds dQ to an fp32 accumulator (:data:`HOPPER_FUSED_DQ`)
    whose descriptor (``plan.dq_desc``, a template) each call rebases."""
    from .hopper import _hopper_dkdv_kernel

    B, H, N, d = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    half = _HOPPER_TILE // 2
    step_m = _bwd_step_m(d, fused_dq, constexprs)   # the queries of a step (K, V: tile halves)
    dq_rows = _bwd_dq_rows(step_m)       # a warpgroup's dQ tile: half the step's rows, every column
    sources = tuple(_gluon_descriptor(t, step_m if t is q or t is do else half)
                    for t in (q, k, v, do)) + tuple(_stat_descriptor(t, step_m) for t in stats)
    plan.hopper, plan.hopper_descs = True, tuple(_rebased(desc, None) for desc in sources)
    # block_size rows of padding before row 0: a step may start up to a block before its
    # sequence, and the copy engine's reduce faults on negative coordinates
    plan.dq_desc = _rebased(_dq_descriptor(torch.empty(4, device=q.device),
                                           (B, H, layout.block_size + N, d),
                                           step_m // 2 if dq_rows else step_m), None)
    plan.dq_convert = _dq_convert_launch(B * H, N, d, layout.block_size, scale, cached)
    stats_mode = _stats_mode(layout, N)
    # only the TMA copies read the masked rows of a step (the 4-byte copies zero-fill them)
    plan.stats_tma = stats_mode == 1
    num_n_tiles = _num_tiles(layout.seqs, 5, 3, _HOPPER_TILE)
    plan.order_dkdv = None if _no_order(layout) else _launch_order(
        bwd_ptr, schedule_cache, kind="dkdv", batch=B, num_heads=H, group=H // Hkv,
        per_head=layout.table_heads > 1, num_tiles=num_n_tiles, tile=_HOPPER_TILE,
        block_size=layout.block_size, reverse=False, first_pos=int(layout.seqs[0, 5]))
    names = ("CAUSAL", "HAS_WL", "HAS_WR", "HAS_KPM", "PER_SEQ", "PACKED", "HAS_SOFTCAP", "HAS_ALIBI",
             "HAS_DROPOUT")
    plan.dkdv_tiles = (num_n_tiles, _HOPPER_TILE, int(layout.seqs[0, 5]), slots * Hkv)
    tail = (num_n_tiles, Hkv * Nk * d, Nk * d, geometry[0], H, Hkv, N, *geometry[1:], scale,
            qk_scale, *mod_tail)
    options = dict(BLOCK=layout.block_size, BLOCK_M=step_m, BLOCK_N=_HOPPER_TILE, HEAD_DIM=d,
                   GROUP_SIZE=H // Hkv,
                   NUM_STAGES=(_fused_stages(d, constexprs, step_m) if fused_dq
                               else _HOPPER_BWD_STAGES[d]),
                   CONSUMER_REGS=_HOPPER_BWD_REGS["causal" if layout.causal else "plain"],
                   PRODUCER_REGS=24, STATS_TMA=stats_mode, FUSED_DQ=fused_dq,
                   ROWS_LATE=_bwd_rows_late(d, constexprs), DQ_ROWS=dq_rows,
                   KV_REGS=_bwd_kv_regs(d, constexprs, fused_dq),
                   RELEASE=bool(_switch("HOPPER_RELEASE_ALL")),
                   **{n: constexprs[n] for n in names})
    options["HAS_DROPOUT"] = _hopper_dropout(options["HAS_DROPOUT"])
    options["OUT_TMA"] = _bwd_out_mode(_bwd_out_tma(layout, bwd_ptr, schedule_cache, options["HAS_ALIBI"], d))
    # q, k, v, dO, the statistics rows, dQ's accumulator and the outputs (dK, dV: head
    # positions 20 and 21) by base tensor
    descs = {**dict(enumerate(plan.hopper_descs)), 6: plan.dq_desc, 20: _out_template,
             21: _out_template}
    plan.dkdv_launch = lambda order: _Launch(
        _hopper_dkdv_kernel, _grid(order, num_n_tiles, slots * Hkv), 22, tail, 4, 1, cached,
        SCHEDULED=order is not None, descs=descs, **options)
    plan.dkdv = plan.dkdv_launch(plan.order_dkdv)


def _positive_scale(q: torch.Tensor, scale: float) -> Tuple[torch.Tensor, float, bool]:
    """``(q, scale, flipped)`` for the kernels, which take a tile's row max of the raw scores
    and scale it after (one FMA a score inside exp2), so they need ``scale >= 0``: a negative
    scale runs as ``-q`` with ``|scale|``, the same scores (``scale q.k = |scale| (-q).k``),
    at the cost of one negated copy of q. The backward then gives dK and dV as they are and
    dQ negated (:func:`attention_backward` flips it back)."""
    if scale < 0:
        return q.neg(), -scale, True
    return q, scale, False


def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout, tables, *,
                      scale: float, key_padding_mask: Optional[torch.Tensor] = None,
                      softcap: float = 0.0, alibi_slopes: Optional[torch.Tensor] = None,
                      dropout_p: float = 0.0, rng: Tuple[int, int] = (0, 0),
                      config: Optional[FwdConfig] = None, use_tma: Optional[bool] = None,
                      schedule_cache: Optional[dict] = None, out: Optional[torch.Tensor] = None,
                      lse: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns ``out (B, Hq, N, d)`` in q's dtype and ``lse (B, Hq, N)`` fp32, natural log
    (written into ``out`` and ``lse`` when given: contiguous, of those shapes and dtypes).

    ``layout`` is the :class:`~sparseflash.BlockLayout` and ``tables`` its
    :class:`~sparseflash.layout.LayoutTensors` on q's device. ``key_padding_mask``: int8
    ``(B, Nk)`` (1 = keep) or None. ``softcap``, ``alibi_slopes`` (float32 ``(H,)`` or
    ``(B, H)``), ``dropout_p`` and ``rng = (seed, offset)``: the score modifiers and dropout of
    ``sparse_attention``. ``schedule_cache``: a dict kept per layout by the caller;
    it holds the heavy-first launch orders and the launch plans (:class:`_Launch`) of this
    layout, so that repeated calls with the same shapes skip the configuration and Triton's
    per-launch binding.
    """
    q, scale, _ = _positive_scale(q, scale)
    B, H, N, d = q.shape
    for name, given, shape, dtype in (("out", out, (B, H, N, d), q.dtype), ("lse", lse, (B, H, N), torch.float32)):
        if given is not None and (tuple(given.shape) != shape or given.dtype != dtype
                                  or given.device != q.device or not given.is_contiguous()):
            raise ValueError(f"{name}: expected a contiguous {dtype} tensor of shape {shape} on "
                             f"{q.device}, got {given.dtype} {tuple(given.shape)} on {given.device}"
                             f"{'' if given.is_contiguous() else ', not contiguous'}")
    if out is None:
        out = torch.empty((B, H, N, d), dtype=q.dtype, device=q.device)
    if lse is None:
        lse = torch.empty((B, H, N), dtype=torch.float32, device=q.device)
    if N == 0 or B * H == 0:
        return out, lse
    if layout.packed or layout.num_seqs > 1:
        # tokens outside every sequence are never visited: give them the empty-row result
        out.zero_()
        lse.fill_(float("-inf"))
    t = tables
    kpm = key_padding_mask
    cacheable = (CACHE_PLANS and schedule_cache is not None
                 and _aligned(q, k, v, out, lse, t.fwd_ptr, t.fwd_idx, t.fwd_nfull, t.seqs,
                              *(() if kpm is None else (kpm,))))
    alibi = alibi_slopes
    if alibi is not None:
        cacheable = cacheable and _aligned(alibi)
    key = ("fwd", q.shape, q.stride(), k.shape, k.stride(), v.stride(), q.dtype, q.device,
           None if kpm is None else kpm.stride(), scale, config, use_tma, USE_TMA, softcap,
           None if alibi is None else alibi.stride(), dropout_p, _variants(), USE_HOPPER,
           _HOPPER_STAGES.get(d), HOPPER_PERSISTENT, HOPPER_FWD_OVERLAP, HOPPER_FWD_CONSUMERS,
           HOPPER_DYNAMIC_TILES, HOPPER_FWD_RESCALE, HOPPER_FWD_WALK, HOPPER_SOFTCAP_SHIFT, SOFTCAP_SHIFT,
           HOPPER_FWD_OUT_TMA, HOPPER_FWD_STAGES, HOPPER_FWD_KV_SPLIT, HOPPER_FWD_Q_BUFFERS,
           HOPPER_FWD_PIPELINE, HOPPER_TILE_SLOT, HOPPER_SOFTCAP_EXP2_FMA, HOPPER_RELEASE_ALL,
           HOPPER_FWD_ALIBI_RAW, HOPPER_FWD_ALIBI_SIDES)
    plan = schedule_cache.get("plans", _NO_PLANS).get(key) if cacheable else None
    if plan is None:
        if _use_hopper(q, k, v, layout, scale=scale, config=config, softcap=softcap, alibi=alibi,
                       dropout_p=dropout_p):
            plan = _hopper_fwd_plan(
                q, k, v, layout, t.fwd_ptr, t.fwd_idx, kpm, scale=scale, schedule_cache=schedule_cache,
                cached=cacheable, softcap=softcap, alibi=alibi, dropout_p=dropout_p)
        else:
            plan = _fwd_plan(q, k, v, layout, t.fwd_ptr, kpm, scale=scale, config=config,
                             use_tma=use_tma, schedule_cache=schedule_cache, cached=cacheable,
                             softcap=softcap, alibi=alibi, dropout_p=dropout_p)
        if cacheable:
            _store(schedule_cache, key, plan)
    order = t.fwd_ptr if plan.order is None else plan.order
    if plan.hopper:
        # DYNAMIC: the counter of programs handed out at run time, zero at each launch
        counter = _tile_counter(q.device, plan.counter_len) if plan.dynamic else t.fwd_ptr
        plan.launch(q.device.index, q, k, v, out, lse, t.fwd_ptr, t.fwd_idx,
                    t.fwd_nfull, t.seqs, _kpm_arg(kpm, t.fwd_ptr),
                    t.fwd_ptr if alibi is None else alibi, order, rng[0], rng[1], counter, out)
    else:
        # (the launches put q, k, v into their descriptor templates)
        plan.launch(q.device.index, q, k, v, out, lse, t.fwd_ptr, t.fwd_idx, t.fwd_nfull,
                    t.seqs, _kpm_arg(kpm, t.fwd_ptr), t.fwd_ptr if alibi is None else alibi,
                    order, rng[0], rng[1])
    return out, lse


class _BwdPlan:
    """The backward's two launches (dQ first), their launch orders and descriptor templates."""

    __slots__ = ("dq", "dkdv", "order_dkdv", "order_dq", "qdo_descs", "kv_descs", "hopper",
                 "hopper_descs", "stats_tma", "dkdv_launch", "dkdv_tiles", "splits", "fused_dq",
                 "dq_desc", "dq_convert")

    def __init__(self):
        self.hopper, self.hopper_descs, self.stats_tma = False, None, False
        self.fused_dq, self.dq_desc, self.dq_convert = False, None, None
        self.splits = {}

    def dkdv_split(self, first_cols: np.ndarray, block_size: int, device: torch.device):
        """The dK/dV launch cut in two (cached per column set): ``(launch, order)`` of the key
        tiles that touch a block column marked in ``first_cols`` (bool, one per key block of
        the table), then of the others. Every tile runs once, in its place in the plan's order
        (heavy tiles first within each part)."""
        key = first_cols.tobytes()
        got = self.splits.get(key)
        if got is None:
            num_tiles, tile, first_pos, num_bh = self.dkdv_tiles
            if self.order_dkdv is None:
                order = np.arange(num_bh * num_tiles, dtype=np.int64)
            else:
                order = self.order_dkdv.cpu().numpy().astype(np.int64)   # once per plan and set
            # the block columns a key tile covers (tiles aligned to absolute positions)
            start = (first_pos // tile + np.arange(num_tiles)) * tile - (first_pos // block_size) * block_size
            lo = np.clip(start // block_size, 0, first_cols.size)
            hi = np.clip(-(-(start + tile) // block_size), 0, first_cols.size)
            marked = np.concatenate([[0], np.cumsum(first_cols, dtype=np.int64)])
            touches = (marked[hi] - marked[lo]) > 0
            is_first = touches[order % num_tiles]
            got = []
            for part in (order[is_first], order[~is_first]):
                o = torch.from_numpy(part.astype(np.int32)).to(device)
                got.append((self.dkdv_launch(o) if part.size else None, o))
            got = self.splits[key] = tuple(got)
        return got


def _fold_alibi_rows(hopper_bwd: bool, constexprs) -> bool:
    """The dQ kernel's FOLD_ROWS (and the Hopper dK/dV kernel's ROWS_LATE bit 8): whether the
    lse2 it stores holds the causal ALiBi's row term of the Hopper dK/dV kernel's 64-query steps
    (:data:`HOPPER_BWD_ALIBI_FOLD`; HAS_ALIBI 2, where that kernel reads lse2)."""
    return bool(HOPPER_BWD_ALIBI_FOLD and hopper_bwd and constexprs.get("HAS_ALIBI") == 2)


def _bwd_plan(do, q, k, v, out, stats, layout, fwd_ptr, bwd_ptr, kpm, *, scale, has_dlse, config,
              use_tma, schedule_cache, cached, softcap=0.0, alibi=None, dropout_p=0.0,
              split=False):
    B, H, N, d = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    block_size, causal = layout.block_size, layout.causal
    per_head = layout.table_heads > 1
    d_pad = _head_dim_pad(d)
    cfg = config or bwd_config(d_pad, block_size, q.dtype)
    hopper_bwd = _use_hopper_bwd(do, q, k, v, layout, scale=scale, config=config, softcap=softcap,
                                 alibi=alibi, dropout_p=dropout_p)
    if hopper_bwd:
        # the Gluon dK/dV kernel: the dQ kernel alone reads the config's tile, warps and stages
        m2, n2, warps, stages = _HOPPER_DQ_TABLE[d_pad]
        cfg = _replace(cfg, block_m2=_fit(m2, block_size), block_n2=_fit(n2, block_size),
                       num_warps=warps, num_stages=stages)
    if dropout_p > 0 and config is None:
        cfg = _dropout_stages(cfg)
    upcast, precision = _flags(q.dtype)
    natural = _natural(scale)
    plan = _BwdPlan()
    tma = _use_tma(use_tma, cfg.tma, q, k, v, do)
    qdo = _descriptors(tma, cfg.block_m1, d_pad, q, do)
    kv = _descriptors(tma, cfg.block_n2, d_pad, k, v)
    plan.qdo_descs, plan.kv_descs = _templates(qdo), _templates(kv)
    slots, geometry, constexprs = _geometry(layout, q, kpm)
    mod_tail, mod_constexprs, qk_scale = _mods(softcap, alibi, dropout_p, natural, causal, scale)
    constexprs = {**constexprs, **mod_constexprs}
    dq_strides = (H * N * d, N * d, d, 1)
    dkv_strides = (Hkv * Nk * d, Nk * d, d, 1)
    if hopper_bwd:
        plan.fused_dq = _use_fused_dq(split)
        _hopper_dkdv_plan(plan, q, k, v, do, stats, layout, bwd_ptr, geometry, constexprs, slots,
                          scale=scale, qk_scale=qk_scale, mod_tail=mod_tail,
                          schedule_cache=schedule_cache, cached=cached, fused_dq=plan.fused_dq)
    elif _switch("HOPPER_FUSED_DQ"):
        raise RuntimeError("HOPPER_FUSED_DQ=True but the Hopper dK/dV kernel does not run this call")
    else:
        num_n_tiles = _num_tiles(layout.seqs, 5, 3, cfg.block_n1)
        plan.order_dkdv = None if _no_order(layout) else _launch_order(
            bwd_ptr, schedule_cache, kind="dkdv", batch=B, num_heads=H, group=H // Hkv,
            per_head=per_head, num_tiles=num_n_tiles, tile=cfg.block_n1, block_size=block_size,
            reverse=False, first_pos=int(layout.seqs[0, 5]))
        plan.dkdv_tiles = (num_n_tiles, cfg.block_n1, int(layout.seqs[0, 5]), slots * Hkv)
        # values only (no tensors): the plan is cached, and a split builds launches later
        tail = (num_n_tiles, *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dkv_strides,
                *dkv_strides, geometry[0], H, Hkv, N, *geometry[1:], scale, qk_scale, *mod_tail)
        options = dict(BLOCK=block_size, BLOCK_M=cfg.block_m1, BLOCK_N=cfg.block_n1,
                       GROUP_SIZE=H // Hkv, HEAD_DIM=d, HEAD_DIM_PAD=d_pad, UPCAST=upcast,
                       PRECISION=precision, USE_TMA=tma, fp_fusion=not natural, **constexprs)
        plan.dkdv_launch = lambda order: _Launch(
            _bwd_dkdv_kernel, _grid(order, num_n_tiles, slots * Hkv), 17, tail, cfg.num_warps,
            cfg.num_stages, cached, SCHEDULED=order is not None,
            descs=_by_base(plan.qdo_descs, 0, 3), **options)
        plan.dkdv = plan.dkdv_launch(plan.order_dkdv)
    num_m_tiles = _num_tiles(layout.seqs, 4, 1, cfg.block_m2)
    plan.order_dq = None if _no_order(layout) else _launch_order(
        fwd_ptr, schedule_cache, kind="dq", batch=B, num_heads=H, group=1, per_head=per_head,
        num_tiles=num_m_tiles, tile=cfg.block_m2, block_size=block_size, reverse=causal,
        first_pos=int(layout.seqs[0, 4]))
    plan.dq = _Launch(
        _bwd_dq_kernel, _grid(plan.order_dq, num_m_tiles, slots * H), 19,
        (num_m_tiles, *q.stride(), *k.stride(), *v.stride(), *do.stride(), *out.stride(),
         *dq_strides, geometry[0], H, H // Hkv, N, *geometry[1:], scale, qk_scale, *mod_tail),
        cfg.num_warps, cfg.num_stages, cached, descs=_by_base(plan.kv_descs, 1, 2),
        BLOCK=block_size, BLOCK_M=cfg.block_m2, BLOCK_N=cfg.block_n2,
        HEAD_DIM=d, HEAD_DIM_PAD=d_pad, REVERSE_M=causal,
        UPCAST=upcast, PRECISION=precision, USE_TMA=tma,
        SCHEDULED=plan.order_dq is not None, HAS_DLSE=has_dlse, STATS_ONLY=plan.fused_dq,
        FOLD_ROWS=_fold_alibi_rows(hopper_bwd, constexprs), fp_fusion=not natural, **constexprs)
    return plan


def attention_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       out: torch.Tensor, lse: torch.Tensor, layout, tables, *, scale: float,
                       dlse: Optional[torch.Tensor] = None,
                       key_padding_mask: Optional[torch.Tensor] = None,
                       softcap: float = 0.0, alibi_slopes: Optional[torch.Tensor] = None,
                       dropout_p: float = 0.0, rng: Tuple[int, int] = (0, 0),
                       config: Optional[BwdConfig] = None, use_tma: Optional[bool] = None,
                       schedule_cache: Optional[dict] = None,
                       dkdv_first: Optional[np.ndarray] = None,
                       between: Optional[Callable[[], None]] = None):
    """Returns ``dq, dk, dv`` (contiguous, in the inputs' dtypes). Arguments as in
    :func:`attention_forward`.

    ``dkdv_first`` (bool, one per key block of the table) and ``between``: the dK/dV launch
    runs in two parts, first the key tiles of the marked block columns, then the rest, and
    ``between(dq, dk, dv)`` is called on the host in between, when the marked columns' dK/dV
    and all of dQ are enqueued (context parallelism sends them home there while the rest
    computes). Tried and not kept: the first part and ``between`` on a side stream beside
    the second (39.57 against 39.21 ms one after the other for bigbird's rank at 1M, whole
    38.08: ``benchmarks/split_probe.py``).
    """
    q, scale, flipped = _positive_scale(q, scale)
    negated = []            # flipped: dQ of -q, negated once complete (before ``between``)
    if flipped and between is not None:
        given_between = between

        def between(dq_, dk_, dv_):
            negated.append(dq_.neg_())
            given_between(dq_, dk_, dv_)

    B, H, N, d = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    sparse_seqs = layout.packed or layout.num_seqs > 1
    alloc = torch.zeros if sparse_seqs else torch.empty   # tokens outside every sequence: 0
    # (dQ's zeros, where needed, once the plan says whether the fused dQ overwrites it whole)
    dq = torch.empty((B, H, N, d), dtype=q.dtype, device=q.device)
    dk = alloc((B, Hkv, Nk, d), dtype=k.dtype, device=k.device)
    dv = alloc((B, Hkv, Nk, d), dtype=v.dtype, device=v.device)
    if B * H == 0 or N == 0 or Nk == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    t = tables
    kpm = key_padding_mask
    lse = lse.contiguous()
    # d lse_i / d s_ij = p_ij: the gradient of the returned lse folds into delta (dQ kernel)
    has_dlse = dlse is not None
    dlse = dlse.to(torch.float32).contiguous() if has_dlse else lse
    # lse2 and delta, (B, H, N) each, as rows of one buffer with a block of padding before and
    # after: the Hopper dK/dV kernel copies 64-row steps of them (1-D descriptors over the
    # whole rows, _stats_tma), and a step of a block's rows may start up to a block before its
    # sequence or past the tensor's end: with the padding every copy starts inside a row
    # (allocated once the plan is known: _bwd_workspace; lse2 and delta start block_size values
    # into 16-byte aligned rows, so they are aligned where block_size is a multiple of 4)
    pad = layout.block_size
    cacheable = (CACHE_PLANS and schedule_cache is not None and pad % 4 == 0
                 and _aligned(do, q, k, v, out, lse, dlse, dq, dk, dv, t.fwd_ptr,
                              t.fwd_idx, t.fwd_nfull, t.bwd_ptr, t.bwd_idx, t.bwd_nfull, t.seqs,
                              *(() if kpm is None else (kpm,))))
    alibi = alibi_slopes
    if alibi is not None:
        cacheable = cacheable and _aligned(alibi)
    key = ("bwd", q.shape, q.stride(), k.shape, k.stride(), v.stride(), do.stride(),
           out.stride(), q.dtype, q.device, None if kpm is None else kpm.stride(), scale,
           has_dlse, config, use_tma, USE_TMA, softcap, None if alibi is None else alibi.stride(),
           dropout_p, _variants(), USE_HOPPER_BWD, _HOPPER_BWD_STAGES.get(d),
           tuple(_HOPPER_BWD_REGS.values()), HOPPER_BWD_ROWS_LATE, HOPPER_BWD_CAP_EARLY, HOPPER_BWD_STEP_M,
           HOPPER_BWD_DQ_ROWS, HOPPER_BWD_KV_REGS, HOPPER_BWD_STATS,
           _HOPPER_DQ_TABLE.get(d),
           HOPPER_FUSED_DQ, _HOPPER_FUSED_STAGES.get(d), dkdv_first is not None, HOPPER_BWD_OUT_TMA,
           HOPPER_BWD_OUT_RELOAD,
           HOPPER_RELEASE_ALL, HOPPER_BWD_SPLIT_LOOPS, _HOPPER_BWD_UNCLAMPED, HOPPER_BWD_ALIBI_FOLD)
    plan = schedule_cache.get("plans", _NO_PLANS).get(key) if cacheable else None
    if plan is None:
        # (the statistics rows here only shape the Hopper kernel's descriptor templates)
        plan = _bwd_plan(
            do, q, k, v, out, _stat_rows(B * H * N, pad, q.device), layout, t.fwd_ptr, t.bwd_ptr,
            kpm, scale=scale,
            has_dlse=has_dlse, config=config, use_tma=use_tma, schedule_cache=schedule_cache,
            cached=cacheable, softcap=softcap, alibi=alibi, dropout_p=dropout_p,
            split=dkdv_first is not None)
        if cacheable:
            _store(schedule_cache, key, plan)
    dev = q.device.index
    kpm_arg = _kpm_arg(kpm, t.fwd_ptr)
    if sparse_seqs and not (plan.hopper and plan.fused_dq):
        dq.zero_()       # the dQ kernel writes the rows of the sequences only
    # plan.stats_tma: the dQ kernel writes the rows of the sequences only; the Hopper dK/dV
    # kernel's copies take whole 64-row steps, whose masked rows (padding, other sequences)
    # must hold finite statistics (0 * NaN is NaN), so they start at zero. Its consumers' own
    # loads (no copies) mask those rows.
    work, lse2, delta, row1, dq_acc = _bwd_workspace(plan, B, H, N, d, pad, q.device)
    # dQ first: it also writes delta and lse2, which the dK/dV kernel reads (with the fused dQ,
    # those alone)
    alibi_arg = t.fwd_ptr if alibi is None else alibi
    plan.dq(dev, q, k, v, do, out, lse, dlse, lse2, delta, dq, t.fwd_ptr, t.fwd_idx,
            t.fwd_nfull, t.seqs, kpm_arg, alibi_arg,
            t.fwd_ptr if plan.order_dq is None else plan.order_dq, rng[0], rng[1])
    launches = [(plan.dkdv, t.bwd_ptr if plan.order_dkdv is None else plan.order_dkdv)]
    if dkdv_first is not None:
        launches = plan.dkdv_split(np.asarray(dkdv_first, dtype=bool), layout.block_size, q.device)
    if plan.hopper:
        # the descriptors' bases (the launch puts them into its templates): with the fused dQ
        # the dK/dV kernel adds every step's dS K (unscaled) into dq_acc, block_size rows of
        # padding before row 0 (rows past the end the copy engine skips); without it the kernel
        # never reads that descriptor (any aligned fp32 base)
        dq_base = row1 if dq_acc is None else dq_acc
    for i, (launch, order) in enumerate(launches):
        if i == 1 and between is not None:
            between(dq, dk, dv)
        if launch is None:
            continue
        if plan.hopper:
            launch(dev, q, k, v, do, work, row1, dq_base, lse2, delta, dk, dv, t.bwd_ptr,
                   t.bwd_idx, t.bwd_nfull, t.seqs, kpm_arg, alibi_arg, order, rng[0], rng[1],
                   dk, dv)
        else:
            launch(dev, q, k, v, do, lse2, delta, dk, dv, t.bwd_ptr, t.bwd_idx,
                   t.bwd_nfull, t.seqs, kpm_arg, alibi_arg, order, rng[0], rng[1])
    if plan.hopper and plan.fused_dq:
        plan.dq_convert(dev, dq_acc, dq)        # dq = scale * dq_acc past its padding rows
    if len(launches) == 1 and between is not None:
        between(dq, dk, dv)
    if flipped and not negated:
        dq.neg_()
    return dq, dk, dv


# ------------------------------------------------------------------ decode (split-KV)
_SMS: dict = {}                # multiprocessors per device index


def _sm_count(device: torch.device) -> int:
    n = _SMS.get(device.index)
    if n is None:
        n = _SMS[device.index] = (torch.cuda.get_device_properties(device).multi_processor_count
                                  if device.type == "cuda" else 4)
    return n


def _decode_heads(group: int, num_q: int, table_heads: int) -> int:
    """Query heads packed into one decode tile: the GQA group shares its K/V tiles (and, with
    one table for all heads, its table row), up to 64 rows per tile."""
    if table_heads > 1:
        return 1
    heads = group
    while heads > 1 and heads * num_q > 64:
        heads -= 1
        while group % heads:
            heads -= 1
    return heads


class _DecodePlan:
    __slots__ = ("split", "combine", "num_splits", "heads", "scratch")


def _decode_plan(q, k, v, layout, table_row, kpm, scale, num_splits, cached) -> _DecodePlan:
    B, H, c, d = q.shape
    Hkv = k.shape[1]
    bs = layout.block_size
    d_pad = _head_dim_pad(d)
    heads = _decode_heads(H // Hkv, c, layout.table_heads)
    nq_t = layout.num_q_blocks
    ptr = layout.fwd_ptr
    if layout.table_heads > 1:
        rows = table_row + nq_t * np.arange(layout.table_heads)
        entries = int((ptr[rows + 1] - ptr[rows]).max(initial=0))
    else:
        entries = int(ptr[table_row + 1] - ptr[table_row])
    block_n = bs if is_interpreted() else _fit(64, bs)
    if num_splits is None:
        # about two programs per SM, each walking at least one key tile
        pairs = B * H // heads
        num_splits = max(1, min(entries * (bs // block_n), -(-2 * _sm_count(q.device) // pairs), 64))
    upcast, precision = _flags(q.dtype)
    window = layout.window or (-1, -1)
    plan = _DecodePlan()
    plan.num_splits, plan.heads, plan.scratch = num_splits, heads, {}
    block_m = max(16, 1 << (heads * c - 1).bit_length())
    plan.split = _Launch(
        _decode_split_kernel, (num_splits, B * H // heads), 10,
        (B * H * c * num_splits * d, *q.stride(), *k.stride(), *v.stride(), kpm.stride(0) if kpm is not None else 0,
         H, H // Hkv, c, nq_t, int(layout.table_heads > 1), max(window[0], 0), max(window[1], 0),
         scale * _LOG2E, num_splits),
        4, 2, cached, BLOCK=bs, BLOCK_M=block_m, BLOCK_N=block_n, HEADS=heads, HEAD_DIM=d,
        HEAD_DIM_PAD=d_pad, CAUSAL=layout.causal, HAS_WL=window[0] >= 0, HAS_WR=window[1] >= 0,
        HAS_KPM=kpm is not None, UPCAST=upcast, PRECISION=precision)
    plan.combine = _Launch(
        _decode_combine_kernel, (B * H * c,), 3, (B * H * c * num_splits * d, num_splits), 4, 1, cached,
        HEAD_DIM=d, HEAD_DIM_PAD=d_pad, SPLITS_PAD=max(2, 1 << (num_splits - 1).bit_length()))
    return plan


def decode_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout, tables, *,
                   table_row: int, scale: float, key_padding_mask: Optional[torch.Tensor] = None,
                   schedule_cache: Optional[dict] = None,
                   num_splits: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """A decode step: ``q (B, Hq, c, d)`` (c <= attention.DECODE_MAX_QUERIES, all in one absolute query
    block) against ``k, v (B, Hkv, Nk, d)`` at positions 0..Nk-1, walking local row
    ``table_row`` of a one-sequence layout whose keys start at position 0 (it may list blocks
    past Nk: they are masked). Returns ``out`` (q's dtype) and ``lse`` (fp32)."""
    q, scale, _ = _positive_scale(q, scale)
    B, H, c, d = q.shape
    Nk = k.shape[2]
    kpm = key_padding_mask
    # one plan per table row and shapes (the cache's length is a per-call argument), so the
    # row's length, the split count and the launches are worked out once per block of steps
    key = ("decode", table_row, q.shape, q.stride(), k.shape[:2], k.stride(), v.stride(), q.dtype,
           q.device, None if kpm is None else kpm.stride(), scale, num_splits)
    plans = schedule_cache.get("plans", _NO_PLANS) if schedule_cache is not None else _NO_PLANS
    plan = plans.get(key) if CACHE_PLANS else None
    if plan is None:
        plan = _decode_plan(q, k, v, layout, table_row, kpm, scale, num_splits,
                            cached=CACHE_PLANS and schedule_cache is not None)
        if plan.split.cached:
            _store(schedule_cache, key, plan)
    out = torch.empty((B, H, c, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, c), dtype=torch.float32, device=q.device)
    t = tables
    dev = q.device.index
    fast = (plan.split.binary is not None and plan.combine.binary is not None and _no_launch_hooks()
            and torch.cuda.current_device() == dev)
    if fast:
        # the parts' scratch lives with the plan, one per stream (calls on one stream are
        # ordered, so the next step's writes follow this step's reads)
        stream = _current_stream(dev)
        parts = plan.scratch.get(stream)
        if parts is None:
            parts = plan.scratch[stream] = _parts(B, H, c, plan.num_splits, d, q.device)
    else:
        parts = _parts(B, H, c, plan.num_splits, d, q.device)
    if plan.split.cached and not _aligned(q, k, v, out, lse, parts, *(() if kpm is None else (kpm,))):
        plan, fast = _decode_plan(q, k, v, layout, table_row, kpm, scale, num_splits, cached=False), False
    head = (q, k, v, parts, t.fwd_ptr, t.fwd_idx, _kpm_arg(kpm, t.fwd_ptr), Nk, Nk - c, table_row)
    if fast:
        plan.split.run(stream, *head)
        plan.combine.run(stream, parts, out, lse)
    else:
        plan.split(dev, *head)
        plan.combine(dev, parts, out, lse)
    return out, lse


def _parts(B: int, H: int, c: int, num_splits: int, d: int, device) -> torch.Tensor:
    """The split kernel's scratch: the parts' outputs (B, H, c, splits, d) then their lse
    (B, H, c, splits), fp32, in one buffer."""
    return torch.empty(B * H * c * num_splits * (d + 1), dtype=torch.float32, device=device)
