"""Public block-sparse attention: ``sparse_attention(q, k, v, pattern)``.

Three layers, as flash-attn does it:

1. ``torch.library`` custom ops with fake (meta) implementations, so
   ``torch.compile(fullgraph=True)`` traces a model that calls them without a graph break.
   Their arguments are values (strings, ints, tensors), never object ids: equal patterns
   share a graph, ``torch.export`` programs load in another process, the FX graph cache key
   is stable across processes, and no registry keeps patterns alive.

   * ``sparseflash::attention_fwd`` / ``attention_bwd`` take a Pattern as its text,
     ``str(pattern)``; the op parses it back (bounded LRU, by value) and resolves the layout
     from the shapes it receives, so dynamic shapes work.
   * ``sparseflash::attention_tables_fwd`` / ``attention_tables_bwd`` take a layout's six
     tables as tensors and its geometry as ints: a layout whose tables are computed in the
     graph (``topk_layout``) flows through without a host sync, and a host BlockLayout (or a
     Pattern without a text form, compiled for the traced lengths) travels as constant
     tensors of its tables.

   Each op dispatches to the Triton launchers (:mod:`sparseflash.kernels.launch`) or to the
   blockwise PyTorch implementation (:mod:`sparseflash.blockwise`).
2. The autograd formula, registered on each forward op with ``register_autograd`` (it plays
   the role of the ``autograd.Function``): it saves q, k, v, out and lse, keeps the op's
   other inputs and calls the matching backward op. A gradient flowing into the returned
   lse is folded into delta.
3. :func:`sparse_attention`, which validates, resolves the pattern to a layout and calls (1)
   under torch.compile (``_traced_attention``). In eager mode it calls the same
   implementations through a plain ``autograd.Function`` (``_EagerAttention``, the same
   formula as (2)), which skips the custom-op dispatch and its host overhead.
"""
from __future__ import annotations

import functools
import inspect
import math
import operator
import os
import weakref
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from .blockwise import blockwise_backward, blockwise_forward
from .compiler import (check_window, compile, compile_sequences, from_trace_value, prefix_stable, restrict,
                       trace_value)
from .philox import draw_seed
from .layout import _LIVE_HOST_LAYOUTS, TABLE_FIELDS, BlockLayout
from .parser import parse
from .pattern import Pattern

__all__ = ["sparse_attention", "resolve_layout"]

_BACKENDS = ("auto", "triton", "torch")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_TORCH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ------------------------------------------------------------------ layouts for a call
def _check_offsets(name: str, t) -> None:
    """What can be checked of ``cu_seqlens``-style offsets without reading their values
    (under torch.compile the values are read inside the op)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be an int32 torch.Tensor of shape (num_docs + 1,), got {type(t).__name__}")
    if t.dtype not in (torch.int32, torch.int64) or t.dim() != 1 or t.numel() < 2:
        raise ValueError(f"{name} must be an integer (int32) tensor of shape (num_docs + 1,), "
                         f"got dtype {t.dtype} and shape {tuple(t.shape)}")


def _host_ints(name: str, t, total: int) -> Tuple[int, ...]:
    """Validate ``cu_seqlens``-style offsets and bring them to the host (one sync)."""
    _check_offsets(name, t)
    vals = tuple(int(x) for x in t.tolist())
    if vals[0] != 0:
        raise ValueError(f"{name} must start at 0, got {vals[0]}")
    if any(b < a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"{name} must be non-decreasing, got {list(vals)}")
    if vals[-1] != total:
        raise ValueError(f"{name} must end at the total number of tokens {total}, got {vals[-1]}")
    return vals


@functools.lru_cache(maxsize=64)
def _packed_layout(pattern, q_lens: Tuple[int, ...], k_lens: Tuple[int, ...], block_size: int,
                   causal: bool, num_heads: int, window) -> BlockLayout:
    # a training step calls every layer with the same documents: assemble them once
    return compile_sequences(pattern, q_lens, k_lens, block_size=block_size, causal=causal,
                             num_heads=num_heads, window=window, packed=True)


# a layout used for calls shorter than it was compiled for: its restriction per call shape
_RESTRICTED: "weakref.WeakKeyDictionary[BlockLayout, dict]" = weakref.WeakKeyDictionary()


def _restricted(layout: BlockLayout, seq_len: int, kv_len: int) -> BlockLayout:
    cache = _RESTRICTED.setdefault(layout, {})
    got = cache.get((seq_len, kv_len))
    if got is None:
        if len(cache) >= 64:
            cache.clear()
        got = cache[(seq_len, kv_len)] = restrict(layout, seq_len, kv_len)
    return got


_DEVICE_TABLES_SERVE = ("pattern: a layout with tables on a device serves calls of its own seq_len, "
                        "kv_len and batch (one table set, or one per batch element), without "
                        "cu_seqlens")


def resolve_layout(pattern, *, seq_len: int, kv_len: int, num_heads: int, block_size: int,
                   causal: bool, window=None, cu_seqlens: Optional[Tuple[int, ...]] = None,
                   cu_seqlens_k: Optional[Tuple[int, ...]] = None,
                   key_padding_mask: Optional[np.ndarray] = None, batch: int = 1) -> BlockLayout:
    """The layout a call runs: a Pattern compiled for the call's geometry (cached), or a
    BlockLayout checked against it (and restricted to a shorter call, or to per-batch
    padding tables). ``cu_seqlens``: host offsets of packed documents; ``key_padding_mask``:
    host bool ``(batch, kv_len)`` (for a device-built layout only its presence counts: the
    kernels read the mask, the host never does)."""
    from .pattern import Pattern

    if isinstance(pattern, Pattern):
        if cu_seqlens is not None:
            q_lens = tuple(b - a for a, b in zip(cu_seqlens, cu_seqlens[1:]))
            k_lens = tuple(b - a for a, b in zip(cu_seqlens_k, cu_seqlens_k[1:]))
            if key_padding_mask is None:
                return _packed_layout(pattern, q_lens, k_lens, block_size, causal, num_heads, window)
            return compile_sequences(pattern, q_lens, k_lens, block_size=block_size, causal=causal,
                                     num_heads=num_heads, window=window, packed=True,
                                     key_padding_mask=key_padding_mask)
        if key_padding_mask is not None:
            return compile_sequences(pattern, [seq_len] * batch, [kv_len] * batch,
                                     block_size=block_size, causal=causal, num_heads=num_heads,
                                     window=window, packed=False, key_padding_mask=key_padding_mask)
        return compile(pattern, seq_len, kv_len=kv_len, block_size=block_size, causal=causal,
                       num_heads=num_heads, window_size=window)
    if not isinstance(pattern, BlockLayout):
        raise TypeError(f"pattern must be a sparseflash Pattern or BlockLayout, got {type(pattern).__name__}")
    layout = pattern
    if layout.num_heads != num_heads:
        raise ValueError(f"pattern: the layout was compiled with num_heads={layout.num_heads} but "
                         f"this call has {num_heads} query heads")
    if layout.on_device:
        return _device_built(layout, seq_len, kv_len, batch, cu_seqlens, key_padding_mask)
    if layout.packed or layout.num_seqs > 1:
        # a layout of several sequences is specific to the call it was built for
        if cu_seqlens is not None and layout.packed:
            want_q = [b - a for a, b in zip(cu_seqlens, cu_seqlens[1:])]
            want_k = [b - a for a, b in zip(cu_seqlens_k, cu_seqlens_k[1:])]
            if list(layout.seqs[:, 1]) != want_q or list(layout.seqs[:, 3]) != want_k:
                raise ValueError("pattern: the layout's documents differ from cu_seqlens/cu_seqlens_k")
            return layout
        raise ValueError("pattern: a layout of several sequences needs the cu_seqlens it was built for; "
                         "pass the Pattern instead")
    if cu_seqlens is not None:
        raise ValueError("cu_seqlens: pass the Pattern (each document compiles its own grid), not a "
                         "BlockLayout of one sequence")
    if (layout.seq_len, layout.kv_len) != (seq_len, kv_len):
        if not (kv_len <= layout.kv_len and seq_len <= kv_len and layout.seq_len <= layout.kv_len):
            raise ValueError(
                f"pattern: the layout was compiled for seq_len={layout.seq_len}, kv_len={layout.kv_len}; "
                f"it serves calls with the same lengths or, aligned bottom-right, calls with "
                f"seq_len <= kv_len <= {layout.kv_len} (decode, prefill chunks), not seq_len={seq_len}, "
                f"kv_len={kv_len}")
        layout = _restricted(layout, seq_len, kv_len)
    if key_padding_mask is not None:
        layout = compile_sequences(layout, [seq_len] * batch, [kv_len] * batch,
                                   block_size=block_size, causal=causal, num_heads=num_heads,
                                   window=window, packed=False, key_padding_mask=key_padding_mask)
    return layout


def _device_built(layout: BlockLayout, seq_len: int, kv_len: int, batch: int, cu_seqlens,
                  key_padding_mask) -> BlockLayout:
    """A device-built layout (topk_layout, layout_from_block_mask) checked against the call
    from its host metadata alone: it serves calls of its own lengths and batch. With a
    key-padding mask every block is made partial (:meth:`BlockLayout.every_block_partial`)."""
    what = "a device-built layout (topk_layout, layout_from_block_mask)"
    if cu_seqlens is not None:
        raise ValueError(f"cu_seqlens: {what} has one table per batch element, not packed documents")
    if (layout.seq_len, layout.kv_len) != (seq_len, kv_len):
        raise ValueError(f"pattern: {what} built for seq_len={layout.seq_len}, kv_len={layout.kv_len} "
                         f"serves only calls of those lengths, not seq_len={seq_len}, kv_len={kv_len}")
    if layout.num_seqs not in (1, batch):
        raise ValueError(f"pattern: {what} with {layout.num_seqs} batch tables cannot serve a call "
                         f"of batch {batch}")
    return layout if key_padding_mask is None else layout.every_block_partial()


# ------------------------------------------------------------------ implementations
_NO_MODS = (0.0, None, 0.0, (0, 0))      # softcap, alibi_slopes, dropout_p, (seed, offset)


def _mod_kwargs(mods) -> dict:
    softcap, alibi, dropout_p, rng = mods
    return dict(softcap=softcap, alibi_slopes=alibi, dropout_p=dropout_p, rng=rng)


def _forward_impl(q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout, scale: float,
                  backend: str, kpm: Optional[Tensor], mods=_NO_MODS, out: Optional[Tensor] = None,
                  lse: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The forward computation both the custom op and the eager autograd path run.
    ``out``/``lse``: contiguous tensors to write the result into (the Triton kernels write
    them directly; the torch backend copies)."""
    if backend == "triton":
        from .kernels.launch import attention_forward

        t = layout.to(q.device)
        return attention_forward(q, k, v, layout, t, scale=scale, key_padding_mask=kpm,
                                 schedule_cache=t.plans, out=out, lse=lse, **_mod_kwargs(mods))
    o, l_ = blockwise_forward(q, k, v, layout, scale=scale,
                              key_padding_mask=None if kpm is None else kpm.bool(), **_mod_kwargs(mods))
    if out is not None:
        o = out.copy_(o)
    if lse is not None:
        l_ = lse.copy_(l_)
    return o, l_


def _backward_impl(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                   dlse: Optional[Tensor], layout: BlockLayout, scale: float,
                   backend: str, kpm: Optional[Tensor], mods=_NO_MODS, dkdv_first=None,
                   between=None) -> Tuple[Tensor, Tensor, Tensor]:
    """``dkdv_first``/``between``: see ``kernels.launch.attention_backward`` (the torch
    backend computes everything, then calls ``between``)."""
    if backend == "triton":
        from .kernels.launch import attention_backward

        t = layout.to(q.device)
        return attention_backward(do, q, k, v, out, lse, layout, t, scale=scale, dlse=dlse,
                                  key_padding_mask=kpm, schedule_cache=t.plans,
                                  dkdv_first=dkdv_first, between=between, **_mod_kwargs(mods))
    grads = blockwise_backward(do, q, k, v, out, lse, layout, scale=scale, dlse=dlse,
                               key_padding_mask=None if kpm is None else kpm.bool(), **_mod_kwargs(mods))
    if between is not None:
        between(*grads)
    return grads


# ------------------------------------------------------------------ 1. custom ops
# The ops take only values that torch.compile, torch.export and the FX graph cache can
# compare and serialise (strings, ints, tensors), so equal patterns give one graph, a saved
# program loads in another process and nothing process-wide grows with the patterns seen:
#
# * attention_fwd/bwd take a Pattern as its text form, ``str(pattern)``. The op parses it
#   back (a bounded cache by value) and resolves the layout from the shapes and the
#   document/padding tensors it receives: torch.compile never traces the mask compiler,
#   the graph holds no tables, and dynamic shapes work.
# * attention_tables_fwd/bwd take a layout's six tables as tensors and its geometry as ints.
#   Tables built in the graph (``topk_layout``) flow through them without a host sync
#   (``host_tables`` False: the op never reads them on the host). A host BlockLayout, or a
#   Pattern without a text form (``from_mask``/``from_fn`` leaves), travels as constant
#   tensors of its tables (``host_tables`` True): the op rebuilds the host layout from them
#   once per table tensor (weakly keyed, it dies with the graph) to restrict it to a
#   shorter call or add padding tables, as eager calls do.
_parsed = functools.lru_cache(maxsize=128)(parse)       # text -> Pattern, bounded, by value


def _op_layout(pattern, block_size: int, causal: bool, window_left: int, window_right: int,
               q: Tensor, k: Tensor, cu_seqlens: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
               kpm: Optional[Tensor]) -> BlockLayout:
    """The layout of a Pattern or host BlockLayout for these shapes and tensors (cached)."""
    cu_q = cu_k = None
    if cu_seqlens is not None:
        # validated here too: under torch.compile the call's checks could not read them
        cu_q = _host_ints("cu_seqlens", cu_seqlens, q.shape[2])
        cu_k = cu_q if cu_seqlens_k is None else _host_ints("cu_seqlens_k", cu_seqlens_k, k.shape[2])
    return resolve_layout(pattern, seq_len=q.shape[2], kv_len=k.shape[2],
                          num_heads=q.shape[1], block_size=block_size, causal=causal,
                          window=check_window((window_left, window_right)), cu_seqlens=cu_q,
                          cu_seqlens_k=cu_k, batch=q.shape[0],
                          key_padding_mask=None if kpm is None else kpm.bool().cpu().numpy())


def _op_mods(softcap, alibi_slopes, dropout_p, rng):
    return (softcap, alibi_slopes, dropout_p, _rng_ints(rng) if rng is not None else (0, 0))


@torch.library.custom_op("sparseflash::attention_fwd", mutates_args=())
def _attention_fwd(q: Tensor, k: Tensor, v: Tensor, pattern: str, block_size: int,
                   causal: bool, scale: float, backend: str, window_left: int, window_right: int,
                   cu_seqlens: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
                   key_padding_mask: Optional[Tensor], softcap: float = 0.0,
                   alibi_slopes: Optional[Tensor] = None, dropout_p: float = 0.0,
                   rng: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    layout = _op_layout(_parsed(pattern), block_size, causal, window_left, window_right, q, k,
                        cu_seqlens, cu_seqlens_k, key_padding_mask)
    return _forward_impl(q, k, v, layout, scale, backend, key_padding_mask,
                         _op_mods(softcap, alibi_slopes, dropout_p, rng))


@torch.library.custom_op("sparseflash::attention_bwd", mutates_args=())
def _attention_bwd(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                   dlse: Optional[Tensor], pattern: str, block_size: int, causal: bool,
                   scale: float, backend: str, window_left: int, window_right: int,
                   cu_seqlens: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
                   key_padding_mask: Optional[Tensor], softcap: float = 0.0,
                   alibi_slopes: Optional[Tensor] = None, dropout_p: float = 0.0,
                   rng: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    layout = _op_layout(_parsed(pattern), block_size, causal, window_left, window_right, q, k,
                        cu_seqlens, cu_seqlens_k, key_padding_mask)
    return _backward_impl(do, q, k, v, out, lse, dlse, layout, scale, backend, key_padding_mask,
                          _op_mods(softcap, alibi_slopes, dropout_p, rng))


# host layouts rebuilt from the constant tables of a graph, by id of the fwd_idx tensor; an
# entry lives as long as that tensor (tensors compare elementwise, so no WeakKeyDictionary)
_HOST_TABLES: Dict[int, Dict[tuple, BlockLayout]] = {}


def _host_tables(t: Tensor) -> Dict[tuple, BlockLayout]:
    got = _HOST_TABLES.get(id(t))
    if got is None:
        got = _HOST_TABLES[id(t)] = {}
        weakref.finalize(t, _HOST_TABLES.pop, id(t), None)
    return got


def _table_layout(tables: Tuple[Tensor, ...], seqs: List[int], seq_len: int, kv_len: int,
                  num_heads: int, block_size: int, causal: bool, table_heads: int,
                  window_left: int, window_right: int, packed: bool, host_tables: bool,
                  q: Tensor, k: Tensor, cu_seqlens: Optional[Tensor],
                  cu_seqlens_k: Optional[Tensor], kpm: Optional[Tensor]) -> BlockLayout:
    """The BlockLayout of a table op's arguments (seqs: the ``seqs`` rows, flattened)."""
    window = check_window((window_left, window_right))
    meta = dict(seq_len=seq_len, kv_len=kv_len, block_size=block_size, causal=causal,
                num_heads=num_heads, table_heads=table_heads, window=window, packed=packed,
                seqs=np.asarray(seqs, dtype=np.int64))
    if not host_tables:
        # built in the graph: used as they are, never read on the host; with a key-padding
        # mask every block partial (BlockLayout.every_block_partial)
        if kpm is not None:
            tables = tuple(torch.zeros_like(t) if name.endswith("nfull") else t
                           for name, t in zip(TABLE_FIELDS, tables))
        return BlockLayout(**meta, **dict(zip(TABLE_FIELDS, tables)))
    per_tables = _host_tables(tables[1])
    key = (tuple(seqs), seq_len, kv_len, num_heads, block_size, causal, table_heads, window, packed)
    layout = per_tables.get(key)
    if layout is None:
        layout = per_tables[key] = BlockLayout(
            **meta, **{name: t.cpu().numpy() for name, t in zip(TABLE_FIELDS, tables)})
    return _op_layout(layout, block_size, causal, window_left, window_right, q, k, cu_seqlens,
                      cu_seqlens_k, kpm)


@torch.library.custom_op("sparseflash::attention_tables_fwd", mutates_args=())
def _attention_tables_fwd(q: Tensor, k: Tensor, v: Tensor, fwd_ptr: Tensor, fwd_idx: Tensor,
                          fwd_nfull: Tensor, bwd_ptr: Tensor, bwd_idx: Tensor, bwd_nfull: Tensor,
                          seqs: List[int], seq_len: int, kv_len: int, block_size: int,
                          causal: bool, table_heads: int, window_left: int, window_right: int,
                          packed: bool, host_tables: bool, scale: float, backend: str,
                          cu_seqlens: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
                          key_padding_mask: Optional[Tensor], softcap: float = 0.0,
                          alibi_slopes: Optional[Tensor] = None, dropout_p: float = 0.0,
                          rng: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Attention over a layout given as its tables (the BlockLayout docstring's fields) and
    its host geometry: ``seqs`` is the ``seqs`` rows flattened, ``seq_len``/``kv_len`` the
    lengths the layout was built for; ``host_tables``: see the comment above."""
    layout = _table_layout((fwd_ptr, fwd_idx, fwd_nfull, bwd_ptr, bwd_idx, bwd_nfull), seqs,
                           seq_len, kv_len, q.shape[1], block_size, causal, table_heads,
                           window_left, window_right, packed, host_tables, q, k, cu_seqlens,
                           cu_seqlens_k, key_padding_mask)
    return _forward_impl(q, k, v, layout, scale, backend, key_padding_mask,
                         _op_mods(softcap, alibi_slopes, dropout_p, rng))


@torch.library.custom_op("sparseflash::attention_tables_bwd", mutates_args=())
def _attention_tables_bwd(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                          dlse: Optional[Tensor], fwd_ptr: Tensor, fwd_idx: Tensor,
                          fwd_nfull: Tensor, bwd_ptr: Tensor, bwd_idx: Tensor, bwd_nfull: Tensor,
                          seqs: List[int], seq_len: int, kv_len: int, block_size: int,
                          causal: bool, table_heads: int, window_left: int, window_right: int,
                          packed: bool, host_tables: bool, scale: float, backend: str,
                          cu_seqlens: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
                          key_padding_mask: Optional[Tensor], softcap: float = 0.0,
                          alibi_slopes: Optional[Tensor] = None, dropout_p: float = 0.0,
                          rng: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    layout = _table_layout((fwd_ptr, fwd_idx, fwd_nfull, bwd_ptr, bwd_idx, bwd_nfull), seqs,
                           seq_len, kv_len, q.shape[1], block_size, causal, table_heads,
                           window_left, window_right, packed, host_tables, q, k, cu_seqlens,
                           cu_seqlens_k, key_padding_mask)
    return _backward_impl(do, q, k, v, out, lse, dlse, layout, scale, backend, key_padding_mask,
                          _op_mods(softcap, alibi_slopes, dropout_p, rng))


def _fwd_fake(q, k, v, *args, **kwargs):
    B, H, N, d = q.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty((B, H, N, d)), q.new_empty((B, H, N), dtype=lse_dtype)


def _bwd_fake(do, q, k, v, *args, **kwargs):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


# ------------------------------------------------------------------ 2. autograd
def _grads(dout, dlse, q, k, v, out, lse, backward):
    """The gradient formula both autograd routes share: a missing output gradient is zero."""
    if dout is None:
        dout = torch.zeros_like(out)
    return backward(dout.contiguous() if dout.stride(-1) != 1 else dout, q, k, v, out, lse, dlse)


def _register(fwd_op, bwd_op) -> None:
    """Fake implementations and the autograd formula of one op pair: the forward saves q, k,
    v, out and lse and keeps its other inputs (pattern or tables, geometry, document and
    padding tensors) for the backward op."""
    fwd_op.register_fake(_fwd_fake)
    bwd_op.register_fake(_bwd_fake)

    def setup_context(ctx, inputs, output):
        q, k, v, *static = inputs
        ctx.static = tuple(static)
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse)

    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _grads(dout, dlse, q, k, v, out, lse, lambda *a: bwd_op(*a, *ctx.static))
        return (dq, dk, dv) + (None,) * len(ctx.static)

    fwd_op.register_autograd(backward, setup_context=setup_context)


_register(_attention_fwd, _attention_bwd)
_register(_attention_tables_fwd, _attention_tables_bwd)


class _EagerAttention(torch.autograd.Function):
    """The same formula as the registered autograd above, for eager calls.

    Outside torch.compile the custom-op dispatch and its autograd wrapper cost tens of
    microseconds of host time per call (benchmarks/NOTES.md, run 12), which short-row
    layouts cannot hide behind GPU work; this path calls the implementations directly.
    """

    @classmethod
    def apply(cls, q, k, v, layout, scale, backend, kpm, mods):
        """``Function.apply`` without its per-call binding of the arguments to ``forward``'s
        signature (which has no defaults to apply: every argument is given) where no functorch
        transform is active: 10 instead of 22 µs of host time a call (CPU, Python 3.11, stop
        51); under one (vmap, grad), torch's whole path."""
        args = (q, k, v, layout, scale, backend, kpm, mods)
        if torch._C._are_functorch_transforms_active():
            return super().apply(*args)
        # what Function.apply does next on this path, after the binding
        args = torch._functorch.utils.unwrap_dead_wrappers(args)
        return super(torch.autograd.Function, cls).apply(*args)

    @staticmethod
    def forward(q, k, v, layout, scale, backend, kpm, mods):
        return _forward_impl(q, k, v, layout, scale, backend, kpm, mods)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, layout, scale, backend, kpm, mods = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.layout, ctx.scale, ctx.backend, ctx.kpm, ctx.mods = layout, scale, backend, kpm, mods
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _grads(dout, dlse, q, k, v, out, lse, lambda *a: _backward_impl(
            *a, ctx.layout, ctx.scale, ctx.backend, ctx.kpm, ctx.mods))
        return dq, dk, dv, None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, q, k, v, layout, scale, backend, kpm, mods):
        """torch.func.vmap: the mapped dimension folds into the batch (one layout serves every
        batch element), so a vmapped call is one call over ``V * batch`` sequences."""
        if layout.num_seqs > 1 or layout.packed or kpm is not None:
            raise NotImplementedError("sparse_attention under torch.func.vmap supports neither "
                                      "key_padding_mask nor cu_seqlens")
        V = info.batch_size

        def fold(t, dim):
            t = t.unsqueeze(0).expand(V, *t.shape) if dim is None else t.movedim(dim, 0)
            return t.reshape(V * t.shape[1], *t.shape[2:])
        out, lse = _EagerAttention.apply(fold(q, in_dims[0]), fold(k, in_dims[1]), fold(v, in_dims[2]),
                                         layout, scale, backend, kpm, mods)
        return (out.reshape(V, -1, *out.shape[1:]), lse.reshape(V, -1, *lse.shape[1:])), (0, 0)


# Under a functorch transform torch's Function.apply binds each call's arguments to
# ``forward``'s signature (setup_context is defined; eager calls skip it, _EagerAttention.apply),
# and inspect.signature honours a precomputed ``__signature__``: about 5 instead of 15
# microseconds of host time a call (CPU, Python 3.11)
_EagerAttention.forward.__signature__ = inspect.signature(_EagerAttention.forward)


# ------------------------------------------------------------------ 3. public function
def _check_tensor(name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be 4-D (batch, heads, seq, head_dim), got shape {tuple(t.shape)}")


def _resolve_backend(backend, q: Tensor) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if q.is_cuda else "torch"
    if backend == "triton" and not q.is_cuda:
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("backend='triton' needs CUDA tensors; on CPU it runs only under Triton's "
                             "interpreter: set TRITON_INTERPRET=1 before sparseflash's kernels are imported")
        from .kernels.launch import is_interpreted

        if not is_interpreted():
            raise ValueError("backend='triton' on CPU: TRITON_INTERPRET=1 was set after the kernels were "
                             "compiled; set it before importing sparseflash.kernels")
    return backend


def _settings(pattern, block_size, causal, window_size):
    """block_size, causal and window of the call: a BlockLayout's own, which an explicit
    argument may repeat but not contradict; a Pattern's defaults are 128, False, None."""
    if causal is not None and not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool, got {causal!r}")
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int)):
        raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
    window = check_window(window_size)
    if isinstance(pattern, BlockLayout):
        for name, given, have in (("block_size", block_size, pattern.block_size),
                                  ("causal", causal, pattern.causal)):
            if given is not None and given != have:
                raise ValueError(f"{name}={given!r} conflicts with the layout's {name}={have!r}; "
                                 f"leave {name} unset to use the layout's")
        if window_size is not None and window != pattern.window:
            raise ValueError(f"window_size={window_size!r} conflicts with the layout's window "
                             f"{pattern.window!r}; leave window_size unset to use the layout's")
        return pattern.block_size, pattern.causal, pattern.window
    return (128 if block_size is None else block_size), bool(causal), window


def _check_padding(key_padding_mask, B: int, Nk: int, device, length: str = "kv_len") -> Optional[Tensor]:
    if key_padding_mask is None:
        return None
    if not isinstance(key_padding_mask, Tensor):
        raise TypeError(f"key_padding_mask must be a bool torch.Tensor of shape (batch, {length}) = "
                        f"{(B, Nk)}, got {type(key_padding_mask).__name__}")
    if key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) != (B, Nk):
        raise ValueError(f"key_padding_mask must be a bool tensor of shape (batch, {length}) = {(B, Nk)} "
                         f"(True = the key may be attended), got dtype {key_padding_mask.dtype} and "
                         f"shape {tuple(key_padding_mask.shape)}")
    return key_padding_mask.to(device).contiguous().view(torch.int8)


@torch.compiler.assume_constant_result
def _static_tables(source, device: torch.device, seq_len: int, kv_len: int, num_heads: int,
                   block_size: int, causal: bool, window) -> tuple:
    """The tables of a host BlockLayout (given as its serial), or of a Pattern without a text
    form (given as its ``trace_value``) compiled for these lengths: ``(fwd_ptr, ..., bwd_nfull)`` on ``device``
    (the tensors the layout keeps, ``BlockLayout.to``) and ``(seq_len, kv_len, table_heads,
    packed, *seqs rows)``. Under torch.compile it runs once, at trace time: the graph holds
    the tables as constants."""
    layout = _static_layout(source, seq_len, kv_len, num_heads, block_size, causal, window)
    t = layout.to(device)
    return (tuple(getattr(t, name) for name in TABLE_FIELDS),
            (layout.seq_len, layout.kv_len, layout.table_heads, int(layout.packed),
             *(x for row in layout._seq_rows for x in row)))


def _static_layout(source, seq_len, kv_len, num_heads, block_size, causal, window) -> BlockLayout:
    if isinstance(source, tuple) and source[0] is BlockLayout:   # a host layout's serial
        return _LIVE_HOST_LAYOUTS[source[1]]
    return compile(from_trace_value(source), seq_len, kv_len=kv_len, block_size=block_size,
                   causal=causal, num_heads=num_heads, window_size=window)


def _traced_attention(q: Tensor, k: Tensor, v: Tensor, pattern, call: "_Call", mods) -> Tuple[Tensor, Tensor]:
    """``sparse_attention`` under torch.compile (and on meta tensors): one custom op whose
    arguments are values. A Pattern travels as its text; a layout as its tables."""
    wl, wr = call.window if call.window is not None else (-1, -1)
    if isinstance(pattern, Pattern) and pattern.has_text_form:
        return _attention_fwd(q, k, v, str(pattern), call.block_size, call.causal, call.scale,
                              call.backend, wl, wr, call.cu_q, call.cu_k, call.kpm, *mods)
    B, H, N, Nk = call.shape
    if isinstance(pattern, BlockLayout) and isinstance(pattern.fwd_ptr, Tensor):    # tables_on_device
        if (call.cu_q is not None or (pattern.seq_len, pattern.kv_len) != (N, Nk)
                or pattern.packed or pattern.num_seqs not in (1, B)):
            raise ValueError(_DEVICE_TABLES_SERVE)
        tables = tuple(getattr(pattern, name) for name in TABLE_FIELDS)
        geometry = (pattern.seq_len, pattern.kv_len, pattern.table_heads, int(pattern.packed),
                    *(x for row in pattern._seq_rows for x in row))
        host_tables = False
    else:
        if not isinstance(pattern, BlockLayout) and call.cu_q is not None:
            raise ValueError(f"pattern: {pattern} has no text form, and under torch.compile such "
                             f"a pattern does not take cu_seqlens; build the documents' layout "
                             f"outside the compiled function or use a pattern with a text form")
        # a layout brings its own lengths; a Pattern compiles for the call's, made trace-time
        # constants (operator.index specialises symbolic sizes: one graph per length)
        lengths = (None,) * 3 if isinstance(pattern, BlockLayout) else tuple(map(operator.index, (N, Nk, H)))
        # constants, not the objects (torch 2.11's dynamo cannot pass those): a Pattern goes
        # as its trace_value, a host layout as its serial (guarded: another layout retraces)
        source = (BlockLayout, pattern._serial) if isinstance(pattern, BlockLayout) else trace_value(pattern)
        tables, geometry = _static_tables(source, q.device, *lengths, call.block_size,
                                          call.causal, call.window)
        host_tables = True
    seq_len, kv_len, table_heads, packed, *seqs = geometry
    return _attention_tables_fwd(q, k, v, *tables, list(seqs), seq_len, kv_len, call.block_size,
                                 call.causal, table_heads, wl, wr, bool(packed), host_tables,
                                 call.scale, call.backend, call.cu_q, call.cu_k, call.kpm, *mods)


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, pattern: "Union[Pattern, BlockLayout]", *,
                     block_size: Optional[int] = None,
                     causal: Optional[bool] = None, scale: Optional[float] = None,
                     return_lse: bool = False, backend: str = "auto",
                     cu_seqlens: Optional[Tensor] = None, cu_seqlens_k: Optional[Tensor] = None,
                     key_padding_mask: Optional[Tensor] = None,
                     window_size: Optional[Tuple[int, int]] = None, dropout_p: float = 0.0,
                     softcap: float = 0.0,
                     alibi_slopes: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Block-sparse attention ``softmax(scale * q k^T restricted to the layout's mask) v``.

    Args:
        q: ``(batch, num_heads, seq_len, head_dim)``.
        k, v: ``(batch, num_kv_heads, kv_len, head_dim)``; ``num_heads`` must be a multiple of
            ``num_kv_heads`` (GQA/MQA: query head h reads kv head ``h // (num_heads // num_kv_heads)``).
            Any strides (e.g. a ``(B, N, H, d).transpose(1, 2)`` view) are read in place.
        pattern: a :class:`~sparseflash.Pattern` (compiled for the call, cached) or a
            :class:`~sparseflash.BlockLayout`. A layout brings its own block_size, causal and
            window; it serves calls of its own lengths and, aligned bottom-right, shorter
            calls with ``seq_len <= kv_len <= layout.kv_len`` (decode steps, prefill chunks)
            from its rows at the same absolute positions. A device-built layout
            (:func:`~sparseflash.topk_layout`, :func:`~sparseflash.layout_from_block_mask`)
            serves calls of its own lengths and batch, without cu_seqlens or key_padding_mask.
        block_size: tokens per layout block (default: the layout's, or 128 for a Pattern).
        causal: key u visible to query t iff ``u <= t`` in absolute positions (default: the
            layout's, or False for a Pattern).
        scale: softmax scale, default ``1 / sqrt(head_dim)``; any finite float (the Triton
            kernels run a negative one as ``-q`` with ``|scale|``: one copy of q) whose scores
            cannot overflow: refused above float32's range, and where ``|scale| > 2**20`` when
            ``|scale| * max|q_i| * max|k_j|`` (row norms) reaches a quarter of it (one reduction
            over q and k; docs/attention.md, "The overflow guard on scale").
        return_lse: also return the log-sum-exp ``(batch, num_heads, seq_len)`` float32
            (float64 for float64 inputs), natural log; ``-inf`` marks query rows that see no key.
        backend: ``"triton"`` (CUDA; on CPU only with ``TRITON_INTERPRET=1``), ``"torch"``
            (blockwise PyTorch over the same tables, memory O(stored blocks)) or ``"auto"``
            (triton on CUDA, torch on CPU).
        cu_seqlens: int32 ``(num_docs + 1,)`` offsets of packed documents along the sequence
            axis (batch must be 1): document s is query rows ``cu_seqlens[s]:cu_seqlens[s+1]``.
            Each document is its own sequence: the pattern, its blocks and the causal line
            start at its first token, and no token attends across documents.
        cu_seqlens_k: the documents' key offsets when keys are packed differently (default
            ``cu_seqlens``).
        key_padding_mask: bool ``(batch, kv_len)``, True = the key may be attended; ANDed with
            the pattern and the causal mask. Blocks with no valid key are skipped.
        window_size: ``(left, right)`` in tokens, -1 = unbounded side (flash-attn's
            convention): query t sees key u iff ``t - left <= u <= t + right``, ANDed with the
            pattern; blocks wholly outside the window are never visited.
        dropout_p: attention dropout in [0, 1), FlashAttention's semantics: probabilities are
            dropped with this probability (rounded to a multiple of 2**-16: the draws are
            16-bit) and the kept ones scaled by ``1 / (1 - p)`` (the LSE is that of the
            undropped softmax). The mask comes from a Philox seed and offset
            drawn from torch's default generator (``torch.manual_seed`` reproduces a call); the
            backward regenerates it, no N x N mask is stored, and both backends draw the same
            bits. Pass 0 at evaluation.
        softcap: > 0 soft-caps the scaled scores, ``s -> softcap * tanh(s / softcap)``, before
            masking (Gemma-2, flash-attn); 0 is off.
        alibi_slopes: float32 ``(num_heads,)`` or ``(batch, num_heads)``: the bias
            ``-slope * |t - u|`` (query and key absolute positions, flash-attn's convention) is
            added to the (capped) score.

    **Positions.** Queries are aligned bottom-right, exactly like the causal mask: query row
    i sits at absolute position ``i + kv_len - seq_len`` (per document with ``cu_seqlens``).
    So a call with the last c queries against all keys returns exactly the last c rows (and
    LSE) of the full call: decode (c = 1) and chunked prefill. With ``kv_len < seq_len``
    (cross-attention), key row j sits at ``j + seq_len - kv_len``: the two ends align.

    Returns:
        ``out (batch, num_heads, seq_len, head_dim)`` in q's dtype, and ``lse`` if asked.
        Query rows with no visible key give out 0, lse -inf and zero gradient.
        Differentiable in q, k and v (and through lse).

    dtypes: float16, bfloat16, float32 (fp32 dots without tf32); float64 on the torch backend.
    head_dim: 16 to 256 (non-powers of two are padded inside the kernel).
    """
    call = _checked_call(q, k, v, pattern, block_size, causal, scale, backend, cu_seqlens,
                         cu_seqlens_k, key_padding_mask, window_size)
    alibi = _check_mods(dropout_p, softcap, alibi_slopes, q, span=max(q.shape[2], k.shape[2]))
    _check_score_range(q, k, call.scale)
    rng = draw_seed() if dropout_p > 0 else None
    if torch.compiler.is_compiling() or q.is_meta:
        # one custom op (meta tensors take it too: its fake implementation gives the shapes)
        out, lse = _traced_attention(q, k, v, pattern, call, (float(softcap), alibi, float(dropout_p), rng))
        return (out, lse) if return_lse else out
    mods = (float(softcap), alibi, float(dropout_p), _rng_ints(rng) if rng is not None else (0, 0))
    if (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)) or _functorch(q, k, v):
        out, lse = _EagerAttention.apply(q, k, v, call.layout(), call.scale, call.backend, call.kpm, mods)
    elif softcap or alibi is not None or dropout_p:      # the decode kernel has none of these
        out, lse = _forward_impl(q, k, v, call.layout(), call.scale, call.backend, call.kpm, mods)
    else:
        step = _decode_step(call) if call.backend == "triton" else None
        if step is not None:
            from .kernels.launch import decode_forward

            layout, row = step
            t = layout.to(q.device)
            out, lse = decode_forward(q, k, v, layout, t, table_row=row, scale=call.scale,
                                      key_padding_mask=call.kpm, schedule_cache=t.plans)
        else:
            out, lse = _forward_impl(q, k, v, call.layout(), call.scale, call.backend, call.kpm)
    return (out, lse) if return_lse else out


DECODE_MAX_QUERIES = 16       # a call with at most this many queries is a decode step


_prefix_stable = functools.lru_cache(maxsize=256)(prefix_stable)
_DECODE_LAYOUTS: Dict[tuple, Tuple[object, BlockLayout]] = {}


def _capacity(kv_len: int, block_size: int) -> int:
    """Tokens of the layout a decode loop reuses: the cache's blocks rounded up to a power of
    two, so a generation of L tokens compiles about log2(L / block_size) layouts."""
    blocks = -(-kv_len // block_size)
    return block_size << (blocks - 1).bit_length()


def _decode_step(call: "_Call") -> Optional[Tuple[BlockLayout, int]]:
    """(layout, local table row) for the split-KV decode kernel, or None when this call is
    not a decode step: few queries, all in one absolute query block, one sequence. The
    layout is reused across steps: rows of a layout compiled for a capacity (prefix-stable
    patterns) or the caller's BlockLayout; its blocks past the cache's end are masked."""
    B, H, N, Nk = call.shape
    bs = call.block_size
    if call.cu_q_host is not None or N > DECODE_MAX_QUERIES or N > Nk:
        return None
    block = (Nk - N) // bs                               # the queries' absolute block
    if (Nk - 1) // bs != block:
        return None
    pattern = call.pattern
    if isinstance(pattern, BlockLayout):
        if pattern.on_device:        # the decode planner reads the row's length on the host
            return None
        s = pattern.seqs[0]
        first = int(s[4]) // bs                           # the layout's first query block
        if (pattern.num_seqs != 1 or pattern.packed or int(s[5]) != 0 or pattern.kv_len < Nk
                or not first <= block < first + pattern.num_q_blocks):
            return None
        return pattern, block - first
    if _prefix_stable(pattern):
        cap = _capacity(Nk, bs)
        # identity-keyed (the entry holds the pattern, so its id stays valid): a decode loop
        # passes the same object every step, and this skips hashing it and compile's checks
        key = (id(pattern), cap, bs, call.causal, H, call.window)
        hit = _DECODE_LAYOUTS.get(key)
        if hit is None or hit[0] is not pattern:
            if len(_DECODE_LAYOUTS) >= 64:
                _DECODE_LAYOUTS.clear()
            hit = _DECODE_LAYOUTS[key] = (pattern, compile(
                pattern, cap, block_size=bs, causal=call.causal, num_heads=H, window_size=call.window))
        return hit[1], block
    layout = compile(pattern, N, kv_len=Nk, block_size=bs, causal=call.causal, num_heads=H,
                     window_size=call.window)
    return layout, block - int(layout.seqs[0, 4]) // bs


def _functorch(*tensors: Tensor) -> bool:
    """Any input wrapped by a torch.func transform (vmap): the call must go through the
    autograd.Function, whose vmap rule folds the mapped dimension into the batch. (One cheap
    global test first: a decode step pays for every microsecond here.)"""
    return (torch._C._are_functorch_transforms_active()
            and any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors))


def _unwrapped(t: Tensor) -> Tensor:
    """The plain tensor inside a torch.func transform's wrappers (t itself if none)."""
    while torch._C._functorch.is_functorch_wrapped_tensor(t):
        t = torch._C._functorch.get_unwrapped(t)
    return t


def _rng_ints(rng: Tensor) -> Tuple[int, int]:
    """(Philox seed, offset) as kernel ints: the seed forced above 2**40 (so its type never
    changes between calls of one compiled kernel), the offset below 2**31."""
    seed, offset = (int(x) for x in rng.tolist())
    return seed | (1 << 40), offset & 0x7FFFFFFF


# |scale| above which a call bounds its scores from the data (``_check_score_range``): below
# it a score overflows only where |q| |k| alone passes 1e32, inputs that overflow the products
SCALE_CHECKED = 2.0 ** 20


def _score_dtype(dtype) -> torch.dtype:
    """The type the kernels score in: float32, float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _values_unreadable(t: Tensor) -> bool:
    """Whether a guard must not read t's values here: under torch.compile, on a meta tensor, or
    while a CUDA graph is captured (a read would sync the stream)."""
    return torch.compiler.is_compiling() or t.is_meta or (t.is_cuda and torch.cuda.is_current_stream_capturing())


def _check_scale(scale, d: int, dtype) -> float:
    """The softmax scale as a float: default 1/sqrt(d); any finite float the scores' type holds."""
    if scale is None:
        return 1.0 / math.sqrt(d)
    # comparisons, not math.isfinite: under torch.compile (dynamic=True, or a second scale
    # seen) a float argument is symbolic, and math.isfinite cannot be traced
    if (isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale != scale
            or not -float("inf") < scale < float("inf")):
        raise ValueError(f"scale must be a finite float, got {scale!r}")
    top = torch.finfo(_score_dtype(dtype)).max
    if not -top <= scale <= top:
        raise ValueError(f"scale must be a finite float that the kernels' scores hold "
                         f"(|scale| <= {top:.4g} for {dtype} inputs), got {scale!r}")
    return float(scale)


def _check_score_range(q: Tensor, k: Tensor, scale: float, group=None) -> None:
    """Refuse a scale whose scores could overflow: |scale| * max|q_i| * max|k_j| (Euclidean norms
    of the rows, a bound on every |scale q_i . k_j|) must stay under a quarter of the scores' type
    maximum, or the LSE (scale * row max + log of the row sum) and then the softmax turn to inf
    and NaN (with softcap too: the cap applies to the scaled score, which the torch backend forms
    as (scale q) k^T). Checked only where |scale| > SCALE_CHECKED (one reduction over q and k, and
    a host sync); not under torch.compile, on meta tensors or while a CUDA graph is captured.
    ``group``: the context-parallel ranks, whose bounds are combined (all ranks take the same
    branch: they share the scale)."""
    # the scale first: the common case returns after one comparison (a decode step pays for
    # every microsecond)
    if -SCALE_CHECKED <= scale <= SCALE_CHECKED:
        return
    if _values_unreadable(q):
        return
    # under torch.func transforms (vmap, grad) a wrapped tensor's values cannot be read: bound
    # the scores from the plain tensors inside (every mapped call's rows at once)
    q, k = _unwrapped(q), _unwrapped(k)
    # the rows' norms in the inputs' dtype (no full-size copy), rounded up by 2^-6 for their own
    # rounding (bf16 keeps 8 bits); a norm past fp16's range reads inf, and the call is refused
    norms = torch.stack([torch.linalg.vector_norm(t, dim=-1).amax().to(torch.float64) for t in (q, k)])
    norms = norms * (1 + 2.0 ** -6)
    if group is not None:
        import torch.distributed as dist

        dist.all_reduce(norms, op=dist.ReduceOp.MAX, group=group)
    qn, kn = (float(x) for x in norms.tolist())
    bound = abs(scale) * qn * kn
    score = _score_dtype(q.dtype)
    limit = torch.finfo(score).max / 4
    if not bound < limit:
        raise ValueError(f"scale {scale!r} could overflow the scores: |scale| x max row norm of q ({qn:.4g}) "
                         f"x max row norm of k ({kn:.4g}) = {bound:.4g}, above {limit:.4g} (a quarter of "
                         f"the largest {score}); use a "
                         f"smaller scale or scale q or k down (docs/attention.md, 'The overflow guard "
                         f"on scale')")


# the slope tensors whose values _check_slope_values has read: (version counter then, largest
# |slope|) (a decode loop passes one tensor each step: its values are read, and the host synced,
# once)
_CHECKED_SLOPES = WeakIdKeyDictionary()


def _check_slope_values(alibi_slopes: Tensor, span: int, dtype) -> None:
    """Refuse slopes whose bias could give NaN: non-finite ones, or |slope| * span (the largest
    distance between a query and a key) at or above a quarter of the scores' type maximum
    (with the scale's own quarter, the biased score stays within half of it). Reads the values
    once per tensor and version (a host sync where they live on the GPU; the largest |slope| is
    kept, so a growing span reads nothing new); not under torch.compile, on meta tensors or
    during CUDA graph capture."""
    if _values_unreadable(alibi_slopes):
        return
    # under torch.func transforms the values are read from the plain tensor inside
    alibi_slopes = _unwrapped(alibi_slopes)
    # the largest |slope| is kept with the version it was read at: a decode loop's span grows
    # each step, and the comparison below needs no new read
    version = alibi_slopes._version
    seen = _CHECKED_SLOPES.get(alibi_slopes)
    if seen is not None and seen[0] == version:
        top = seen[1]
    else:
        top = alibi_slopes.detach().abs().amax().item() if alibi_slopes.numel() else 0.0
        _CHECKED_SLOPES[alibi_slopes] = (version, top)
    score = _score_dtype(dtype)
    limit = torch.finfo(score).max / 4
    span = max(span, 1)
    if not top * span < limit:            # also true for a NaN or infinite slope
        raise ValueError(f"alibi_slopes must be finite with |slope| x {span} (the longest query-key "
                         f"distance) below {limit:.4g} (a quarter of the largest {score}), got a "
                         f"largest |slope| of {top!r}")


def _check_mods(dropout_p, softcap, alibi_slopes, q: Tensor, span: int) -> Optional[Tensor]:
    """Validate dropout_p, softcap and alibi_slopes (``span``: the longest query-key distance);
    returns the slopes on q's device."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    # comparisons, not math.isfinite: under torch.compile(dynamic=True) floats are symbolic
    if (isinstance(softcap, bool) or not isinstance(softcap, (int, float)) or softcap != softcap
            or not 0.0 <= softcap < float("inf")):
        raise ValueError(f"softcap must be a finite float >= 0 (0 is off), got {softcap!r}")
    if alibi_slopes is None:
        return None
    B, H = q.shape[0], q.shape[1]
    # each size compared on its own: under torch.compile B and H may be symbolic, and dynamo
    # does not decide a tuple's membership among tuples of symbolic sizes
    shape = tuple(getattr(alibi_slopes, "shape", ()))
    fits = ((len(shape) == 1 and shape[0] == H)
            or (len(shape) == 2 and shape[0] == B and shape[1] == H))
    if not isinstance(alibi_slopes, Tensor) or alibi_slopes.dtype != torch.float32 or not fits:
        raise ValueError(f"alibi_slopes must be a float32 tensor of shape (num_heads,) = {(H,)} or "
                         f"(batch, num_heads) = {(B, H)}, got "
                         f"{getattr(alibi_slopes, 'dtype', type(alibi_slopes).__name__)} {shape}")
    _check_slope_values(alibi_slopes, span, q.dtype)
    return alibi_slopes.to(q.device).contiguous()


class _Call:
    """A call's checked arguments; ``layout()`` resolves (compiles, cached) its layout."""

    __slots__ = ("pattern", "block_size", "causal", "window", "scale", "backend", "cu_q", "cu_k",
                 "cu_q_host", "cu_k_host", "kpm", "shape")

    def layout(self) -> BlockLayout:
        B, H, N, Nk = self.shape
        kpm = self.kpm
        if kpm is not None and not (isinstance(self.pattern, BlockLayout) and self.pattern.on_device):
            kpm = kpm.view(torch.bool).cpu().numpy()     # host tables are built with it
        return resolve_layout(self.pattern, seq_len=N, kv_len=Nk, num_heads=H,
                              block_size=self.block_size, causal=self.causal, window=self.window,
                              cu_seqlens=self.cu_q_host, cu_seqlens_k=self.cu_k_host, batch=B,
                              key_padding_mask=kpm)


def _checked_call(q, k, v, pattern, block_size, causal, scale, backend, cu_seqlens, cu_seqlens_k,
                  key_padding_mask, window_size) -> _Call:
    _check_tensor("q", q)
    _check_tensor("k", k)
    _check_tensor("v", v)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share a dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device, got q {q.device}, k {k.device}, v {v.device}")
    B, H, N, d = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    Bk, Hkv, Nk, dk = k.shape
    if Bk != B:
        raise ValueError(f"k: batch {Bk} differs from q's batch {B}")
    if dk != d:
        raise ValueError(f"k: head_dim {dk} differs from q's head_dim {d}")
    if not 16 <= d <= 256:
        raise ValueError(f"q: head_dim must be in [16, 256], got {d}")
    if Hkv == 0 or H % Hkv:
        raise ValueError(f"q: num_heads {H} must be a multiple of k's num_kv_heads {Hkv}")
    if N == 0 or Nk == 0:
        raise ValueError(f"q and k need a positive sequence length, got seq_len {N}, kv_len {Nk}")
    from .pattern import Pattern

    if not isinstance(pattern, (Pattern, BlockLayout)):
        raise TypeError(f"pattern must be a sparseflash Pattern or BlockLayout, got {type(pattern).__name__}")
    call = _Call()
    call.pattern = pattern
    call.backend = _resolve_backend(backend, q)
    allowed = _TRITON_DTYPES if call.backend == "triton" else _TORCH_DTYPES
    if q.dtype not in allowed:
        raise TypeError(f"q: dtype {q.dtype} is not supported by backend {call.backend!r} (use one of {allowed})")
    call.block_size, call.causal, call.window = _settings(pattern, block_size, causal, window_size)
    if call.backend == "triton" and call.block_size < 16:
        raise ValueError(f"block_size must be >= 16 for the triton backend, got {call.block_size}")
    call.scale = _check_scale(scale, d, q.dtype)
    call.cu_q = call.cu_k = call.cu_q_host = call.cu_k_host = None
    if cu_seqlens is None and cu_seqlens_k is not None:
        raise ValueError("cu_seqlens_k needs cu_seqlens (the queries' document offsets)")
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"cu_seqlens: packed documents need q, k, v of batch 1 (1, H, total, d), "
                             f"got batch {B}")
        if torch.compiler.is_compiling() or q.is_meta:
            # the values are data: the op reads (and checks) them when it runs
            _check_offsets("cu_seqlens", cu_seqlens)
            if cu_seqlens_k is not None:
                _check_offsets("cu_seqlens_k", cu_seqlens_k)
            docs_q = cu_seqlens.shape[0] - 1
            docs_k = docs_q if cu_seqlens_k is None else cu_seqlens_k.shape[0] - 1
        else:
            call.cu_q_host = _host_ints("cu_seqlens", cu_seqlens, N)
            call.cu_k_host = (call.cu_q_host if cu_seqlens_k is None
                              else _host_ints("cu_seqlens_k", cu_seqlens_k, Nk))
            docs_q, docs_k = len(call.cu_q_host) - 1, len(call.cu_k_host) - 1
        if docs_k != docs_q:
            raise ValueError(f"cu_seqlens_k must have as many documents as cu_seqlens "
                             f"({docs_q}), got {docs_k}")
        if cu_seqlens_k is None and N != Nk:
            raise ValueError(f"cu_seqlens: q has {N} tokens but k has {Nk}; pass cu_seqlens_k")
        call.cu_q = cu_seqlens
        call.cu_k = cu_seqlens_k
    call.kpm = _check_padding(key_padding_mask, B, Nk, q.device)
    call.shape = (B, H, N, Nk)
    return call
