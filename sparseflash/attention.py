"""Public block-sparse attention: ``sparse_attention(q, k, v, pattern)``.

Three layers, as flash-attn does it:

1. ``sparseflash::attention_fwd`` / ``sparseflash::attention_bwd``: ``torch.library`` custom
   ops with fake (meta) implementations, so ``torch.compile(fullgraph=True)`` traces a model
   that calls them without a graph break. The pattern travels as an int key (a trace-time
   constant under torch.compile, ``_pattern_key_traced``); the ops resolve the layout from the
   shapes they receive, so dynamic shapes work too. Each op dispatches to the Triton launchers
   (:mod:`sparseflash.kernels.launch`) or to the blockwise PyTorch implementation
   (:mod:`sparseflash.reference`).
2. The autograd formula, registered on the forward op with ``torch.library.register_autograd``
   (it plays the role of the ``autograd.Function``): it saves q, k, v, out, lse and the
   pattern key, and calls the backward op. A gradient flowing into the returned lse is folded into delta.
3. :func:`sparse_attention`, which validates, resolves the pattern to a layout and calls (1)
   under torch.compile. In eager mode it calls the same implementations through a plain
   ``autograd.Function`` (``_EagerAttention``, the same formula as (2)), which skips the
   custom-op dispatch and its host overhead.
"""
from __future__ import annotations

import ctypes
import math
import os
import weakref
from typing import Dict, Optional, Tuple, Union

import torch
from torch import Tensor

from .layout import BlockLayout
from .reference import blockwise_backward, blockwise_forward

__all__ = ["sparse_attention"]

_BACKENDS = ("auto", "triton", "torch")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_TORCH_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ------------------------------------------------------------------ 1. custom ops
# The ops get the pattern (or layout) as an int key into _PATTERNS and resolve the layout
# themselves from the actual shapes: torch.compile then never traces the mask compiler or the
# host-to-device copy of the tables, the graph holds no table tensors, and dynamic shapes
# work. The registry holds strong references (a compiled graph may keep a key after the
# caller dropped the object, and ids of live objects are never reused): one entry per
# distinct pattern/layout passed under torch.compile. Eager calls do not register.
_PATTERNS: Dict[int, object] = {}
# per layout: the kernels' launch orders (heavy tiles first), built once per shape/config and
# dropped with the layout
_SCHEDULES: "weakref.WeakKeyDictionary[BlockLayout, dict]" = weakref.WeakKeyDictionary()


def _tables(pattern_key: int, block_size: int, causal: bool, q: Tensor, k: Tensor) -> BlockLayout:
    """The layout of this pattern key for these shapes (compiled once, cached)."""
    return _resolve_layout(_PATTERNS[pattern_key], seq_len=q.shape[2], kv_len=k.shape[2],
                             block_size=block_size, causal=causal, num_heads=q.shape[1])


def _forward_impl(q: Tensor, k: Tensor, v: Tensor, layout: BlockLayout, scale: float,
                  backend: str) -> Tuple[Tensor, Tensor]:
    """The forward computation both the custom op and the eager autograd path run."""
    t = layout.to(q.device)
    kw = dict(block_size=layout.block_size, causal=layout.causal,
              per_head=layout.table_heads > 1, scale=scale)
    if backend == "triton":
        from .kernels.launch import attention_forward

        return attention_forward(q, k, v, t.fwd_ptr, t.fwd_idx, t.fwd_nfull,
                                 schedule_cache=_SCHEDULES.setdefault(layout, {}), **kw)
    return blockwise_forward(q, k, v, t.fwd_ptr, t.fwd_idx, **kw)


def _backward_impl(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                   dlse: Optional[Tensor], layout: BlockLayout, scale: float,
                   backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    t = layout.to(q.device)
    kw = dict(block_size=layout.block_size, causal=layout.causal,
              per_head=layout.table_heads > 1, scale=scale, dlse=dlse)
    if backend == "triton":
        from .kernels.launch import attention_backward

        return attention_backward(do, q, k, v, out, lse, t.fwd_ptr, t.fwd_idx, t.fwd_nfull,
                                  t.bwd_ptr, t.bwd_idx, t.bwd_nfull,
                                  schedule_cache=_SCHEDULES.setdefault(layout, {}), **kw)
    return blockwise_backward(do, q, k, v, out, lse, t.fwd_ptr, t.fwd_idx, t.bwd_ptr, t.bwd_idx, **kw)


@torch.library.custom_op("sparseflash::attention_fwd", mutates_args=())
def _attention_fwd(q: Tensor, k: Tensor, v: Tensor, pattern_key: int, block_size: int,
                   causal: bool, scale: float, backend: str) -> Tuple[Tensor, Tensor]:
    return _forward_impl(q, k, v, _tables(pattern_key, block_size, causal, q, k), scale, backend)


@_attention_fwd.register_fake
def _attention_fwd_fake(q, k, v, pattern_key, block_size, causal, scale, backend):
    B, H, N, d = q.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty((B, H, N, d)), q.new_empty((B, H, N), dtype=lse_dtype)


@torch.library.custom_op("sparseflash::attention_bwd", mutates_args=())
def _attention_bwd(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                   dlse: Optional[Tensor], pattern_key: int, block_size: int, causal: bool,
                   scale: float, backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    return _backward_impl(do, q, k, v, out, lse, dlse, _tables(pattern_key, block_size, causal, q, k),
                          scale, backend)


@_attention_bwd.register_fake
def _attention_bwd_fake(do, q, k, v, out, lse, dlse, pattern_key, block_size, causal, scale, backend):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


# ------------------------------------------------------------------ 2. autograd
def _setup_context(ctx, inputs, output):
    q, k, v, *static = inputs
    ctx.static = tuple(static)          # pattern_key, block_size, causal, scale, backend
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv = _attention_bwd(dout, q, k, v, out, lse, dlse, *ctx.static)
    return (dq, dk, dv) + (None,) * len(ctx.static)


_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


class _EagerAttention(torch.autograd.Function):
    """The same formula as the registered autograd above, for eager calls.

    Outside torch.compile the custom-op dispatch and its autograd wrapper cost tens of
    microseconds of host time per call (benchmarks/NOTES.md, run 12), which short-row
    layouts cannot hide behind GPU work; this path calls the implementations directly.
    """

    @staticmethod
    def forward(ctx, q, k, v, layout, scale, backend):
        out, lse = _forward_impl(q, k, v, layout, scale, backend)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.layout, ctx.scale, ctx.backend = layout, scale, backend
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = _backward_impl(dout, q, k, v, out, lse, dlse, ctx.layout, ctx.scale, ctx.backend)
        return dq, dk, dv, None, None, None


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


def _resolve_layout(pattern, *, seq_len: int, kv_len: int, block_size: int, causal: bool,
                    num_heads: int) -> BlockLayout:
    from .pattern import Pattern

    if isinstance(pattern, BlockLayout):
        want = dict(seq_len=seq_len, kv_len=kv_len, block_size=block_size, causal=causal,
                    num_heads=num_heads)
        for name, value in want.items():
            have = getattr(pattern, name)
            if have != value:
                raise ValueError(f"pattern: the layout was compiled with {name}={have} but this call "
                                 f"needs {name}={value}")
        return pattern
    if isinstance(pattern, Pattern):
        from .compiler import compile

        return compile(pattern, seq_len, kv_len=kv_len, block_size=block_size, causal=causal,
                       num_heads=num_heads)
    raise TypeError(f"pattern must be a sparseflash Pattern or BlockLayout, got {type(pattern).__name__}")


def _pattern_key(pattern) -> int:
    """Register a Pattern or BlockLayout and return the key the custom ops take."""
    from .pattern import Pattern

    if not isinstance(pattern, (Pattern, BlockLayout)):
        raise TypeError(f"pattern must be a sparseflash Pattern or BlockLayout, got {type(pattern).__name__}")
    _PATTERNS.setdefault(id(pattern), pattern)
    return id(pattern)


@torch.compiler.assume_constant_result
def _pattern_key_traced(pattern_id: int) -> int:
    """_pattern_key under torch.compile: run once at trace time, its result a constant.

    Dynamo passes ``id(pattern)`` (and guards on that identity) because older torch versions
    (2.11) accept only literal constants here, not Pattern/BlockLayout objects. The object is
    alive (the traced code holds it), so its id maps back to it.
    """
    return _pattern_key(ctypes.cast(pattern_id, ctypes.py_object).value)


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, pattern, *, block_size: int = 128,
                     causal: bool = False, scale: Optional[float] = None, return_lse: bool = False,
                     backend: str = "auto") -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Block-sparse attention ``softmax(scale * q k^T restricted to the layout's mask) v``.

    Args:
        q: ``(batch, num_heads, seq_len, head_dim)``.
        k, v: ``(batch, num_kv_heads, kv_len, head_dim)``; ``num_heads`` must be a multiple of
            ``num_kv_heads`` (GQA/MQA: query head h reads kv head ``h // (num_heads // num_kv_heads)``).
            Any strides (e.g. a ``(B, N, H, d).transpose(1, 2)`` view) are read in place.
        pattern: a :class:`~sparseflash.Pattern` (compiled on the fly with
            :func:`sparseflash.compile`, cached) or a :class:`~sparseflash.BlockLayout`, whose
            seq_len, kv_len, block_size, causal and num_heads must equal this call's.
        block_size: tokens per layout block (32, 64, 128 on the kernels' tuned path).
        causal: bottom-right aligned causal mask, key s visible to query t iff
            ``s <= t + kv_len - seq_len``.
        scale: softmax scale, default ``1 / sqrt(head_dim)``.
        return_lse: also return the log-sum-exp ``(batch, num_heads, seq_len)`` float32
            (float64 for float64 inputs), natural log; ``-inf`` marks query rows that see no key.
        backend: ``"triton"`` (CUDA; on CPU only with ``TRITON_INTERPRET=1``), ``"torch"``
            (blockwise PyTorch over the same tables, O(block rows) memory) or ``"auto"``
            (triton on CUDA, torch on CPU).

    Returns:
        ``out (batch, num_heads, seq_len, head_dim)`` in q's dtype, and ``lse`` if asked.
        Query rows with no visible key give out 0, lse -inf and zero gradient.
        Differentiable in q, k and v (and through lse).

    dtypes: float16, bfloat16, float32 (fp32 dots without tf32); float64 on the torch backend.
    head_dim: 16 to 256 (non-powers of two are padded inside the kernel).
    """
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
    backend = _resolve_backend(backend, q)
    allowed = _TRITON_DTYPES if backend == "triton" else _TORCH_DTYPES
    if q.dtype not in allowed:
        raise TypeError(f"q: dtype {q.dtype} is not supported by backend {backend!r} (use one of {allowed})")
    if isinstance(block_size, bool) or not isinstance(block_size, int):
        raise TypeError(f"block_size must be an int, got {type(block_size).__name__}")
    if backend == "triton" and block_size < 16:
        raise ValueError(f"block_size must be >= 16 for the triton backend, got {block_size}")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float, got {scale!r}")
    if torch.compiler.is_compiling():
        # the pattern/layout must live outside the compiled function (a module attribute, a
        # global, a closure); the ops resolve the layout from the shapes they are given
        key = _pattern_key_traced(id(pattern))
        out, lse = _attention_fwd(q, k, v, key, block_size, bool(causal), float(scale), backend)
    else:
        # resolve (compile, cached) now so that a mismatch is raised here, before any work
        layout = _resolve_layout(pattern, seq_len=N, kv_len=Nk, block_size=block_size,
                                 causal=bool(causal), num_heads=H)
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            out, lse = _EagerAttention.apply(q, k, v, layout, float(scale), backend)
        else:
            out, lse = _forward_impl(q, k, v, layout, float(scale), backend)
    return (out, lse) if return_lse else out
