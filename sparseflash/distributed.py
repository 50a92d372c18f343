"""Context-parallel block-sparse attention over torch.distributed.

Each rank of a process group holds a contiguous shard of the sequence: rank r holds tokens
``[r * N/W, (r+1) * N/W)`` of q, k and v, shaped ``(B, H, N/W, d)``.
:func:`sparse_attention` returns the rank's shard of the output (and LSE), and autograd gives
the shards' gradients.

**Sparse-aware communication.** Every rank compiles the same pattern over the whole
sequence, so every rank knows, without asking, which key blocks each rank's query rows
read. A rank then exchanges exactly those K/V blocks with point-to-point sends and receives
(``batch_isend_irecv``: NCCL on GPUs, gloo on CPUs), never whole shards: a local pattern
moves one neighbouring block per rank boundary, a global column one block to every rank.

**Overlap and merge.** The rank's rows are split into two layouts: the blocks whose keys it
holds (local) and the blocks it receives (remote). The local part runs while the blocks are
in flight; the remote part runs after they arrive, and the two partial results are merged
through their log-sum-exps. The backward runs the remote part first and sends the gradients
of the received blocks back to their owners while it computes the local part.

Positions are absolute over the whole sequence (the :class:`~sparseflash.BlockLayout` rule),
so causal masks, windows and every pattern mean what they mean on one GPU: the shards'
outputs equal the one-process result.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .attention import _backward_impl, _check_tensor, _forward_impl, _resolve_backend
from .compiler import _check_block_size, _layout_of, _pattern_blocks, absolute_blocks, check_window
from .layout import BlockLayout
from .pattern import Pattern

__all__ = ["sparse_attention", "ShardPlan", "shard_plan"]


@dataclass(frozen=True)
class ShardPlan:
    """What one rank computes and exchanges (built on every rank, identically, from the pattern).

    ``local``/``remote``: the rank's query rows against the key blocks it holds / receives, as
    layouts of ``seq_len = N/W`` queries at positions ``[r*N/W, (r+1)*N/W)`` against the
    ``kv_len = N`` keys of the whole sequence (None when empty). ``recv[p]``/``send[p]``:
    absolute key-block indices this rank receives from / sends to rank p. ``combined``: all of
    the rank's blocks against the key positions ``span`` (its shard and the blocks it
    receives), used instead of the two parts when the rank receives little (see
    :data:`OVERLAP_MIN_FRACTION`).
    """

    rank: int
    world: int
    shard_len: int
    local: Optional[BlockLayout]
    remote: Optional[BlockLayout]
    recv: Tuple[Tuple[int, ...], ...]
    send: Tuple[Tuple[int, ...], ...]
    combined: Optional[BlockLayout] = None
    span: Tuple[int, int] = (0, 0)

    @property
    def blocks_received(self) -> int:
        return sum(len(r) for r in self.recv)


def _rank_blocks(pattern, rank, world, N, bs, causal, num_heads, window):
    """(head, I, J, table_heads) of rank ``rank``'s stored blocks (those visible under the
    causal line and window), absolute indices."""
    n = N // world
    head, I, J, th = _pattern_blocks(pattern, n, N, rank * n, 0, bs, causal, num_heads, window)
    layout = _layout_of(head, I, J, th, n, N, rank * n, 0, bs, causal, num_heads, window, time.perf_counter())
    return (*absolute_blocks(layout), th)


def _part(blocks, keep, rank, world, N, bs, causal, num_heads, window, local: bool) -> Optional[BlockLayout]:
    """The rank's rows restricted to some key blocks: the local part reads the rank's own
    keys (a shard-sized key range at the shard's positions), the remote part the whole
    sequence's key range (a buffer where only the received blocks are written)."""
    head, I, J, th = blocks
    if not keep.any():
        return None
    n = N // world
    order = np.lexsort((J[keep], I[keep]) + ((head[keep],) if head is not None else ()))
    h = head[keep][order] if head is not None else None
    k_pos, k_len = (rank * n, n) if local else (0, N)
    return _layout_of(h, I[keep][order], J[keep][order], th, n, k_len, rank * n, k_pos, bs, causal,
                      num_heads, window, time.perf_counter())


# A rank that receives fewer key tokens than this many shards' worth runs one call over its
# shard and the received blocks, copied next to each other (the exchange overlaps that copy);
# above it, the rank runs two parts, the local one overlapping the exchange, merged through
# the LSE. On two H200s the one-call path was faster in every case measured, including a
# rank receiving a whole shard (benchmarks/results/h200x2-distributed), so the two-part path
# is left for ranks that would receive more than 1.5 shards (3 or more ranks).
OVERLAP_MIN_FRACTION = 1.5


@functools.lru_cache(maxsize=64)
def shard_plan(pattern: Pattern, N: int, world: int, rank: int, block_size: int, causal: bool,
               num_heads: int, window=None) -> ShardPlan:
    """The :class:`ShardPlan` of ``rank`` (cached). O(W * stored blocks of one rank) on the host:
    a rank also works out which of its blocks every other rank reads."""
    n = N // world
    per_rank = n // block_size                                   # key blocks a rank holds
    needs = []
    mine = None
    for r in range(world):
        blocks = _rank_blocks(pattern, r, world, N, block_size, causal, num_heads, window)
        owner = blocks[2] // per_rank                             # [stored] owning rank
        needs.append([tuple(np.unique(blocks[2][owner == p]).tolist()) if p != r else () for p in range(world)])
        if r == rank:
            mine = (blocks, owner)
    blocks, owner = mine
    local = _part(blocks, owner == rank, rank, world, N, block_size, causal, num_heads, window, True)
    remote = _part(blocks, owner != rank, rank, world, N, block_size, causal, num_heads, window, False)
    recv = tuple(needs[rank][p] for p in range(world))
    send = tuple(needs[p][rank] for p in range(world))
    received = sum(len(r) for r in recv) * block_size
    combined, span = None, (rank * n, (rank + 1) * n)
    if received < OVERLAP_MIN_FRACTION * n:
        head, I, J, th = blocks
        k_lo = min(span[0], int(J.min(initial=span[0] // block_size)) * block_size)
        k_hi = max(span[1], (int(J.max(initial=0)) + 1) * block_size)
        span = (k_lo, k_hi)
        order = np.lexsort((J, I) + ((head,) if head is not None else ()))
        if J.size:
            combined = _layout_of(head[order] if head is not None else None, I[order], J[order], th, n,
                                  k_hi - k_lo, rank * n, k_lo, block_size, causal, num_heads, window,
                                  time.perf_counter())
    return ShardPlan(rank, world, n, local, remote, recv, send, combined, span)


def _rows(blocks: Tuple[int, ...], bs: int, device) -> Tensor:
    """Token rows (absolute positions) of ``blocks``."""
    b = torch.tensor(blocks, dtype=torch.long, device=device)
    return (b[:, None] * bs + torch.arange(bs, device=device)[None, :]).reshape(-1)


def _exchange(plan: ShardPlan, group, payload_of, place, bs: int, device, reverse: bool = False):
    """Start the point-to-point exchange of K/V (or their gradients) blocks; returns a function
    that waits for it and places what arrived. ``payload_of(blocks)`` gives the tensor to send
    for our blocks a peer reads (forward) or for the blocks we read from a peer (reverse);
    ``place(blocks, tensor)`` takes what arrived."""
    ops, arrived = [], []
    rank = plan.rank
    for p in range(plan.world):
        if p == rank:
            continue
        out_blocks = plan.recv[p] if reverse else plan.send[p]
        in_blocks = plan.send[p] if reverse else plan.recv[p]
        peer = dist.get_global_rank(group, p) if group is not None else p
        if out_blocks:
            ops.append(dist.P2POp(dist.isend, payload_of(out_blocks).contiguous(), peer, group))
        if in_blocks:
            buf = payload_of(in_blocks, empty=True)
            ops.append(dist.P2POp(dist.irecv, buf, peer, group))
            arrived.append((in_blocks, buf))
    works = dist.batch_isend_irecv(ops) if ops else []

    def finish():
        for w in works:
            w.wait()
        for blocks, buf in arrived:
            place(blocks, buf)
    return finish


def _merge(parts):
    """Merge (out, lse) partial results of disjoint key sets through their log-sum-exps."""
    parts = [p for p in parts if p is not None]
    if len(parts) == 1:
        return parts[0]
    (o1, l1), (o2, l2) = parts
    lse = torch.logaddexp(l1, l2)
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    w1 = torch.exp(l1 - safe).nan_to_num(0.0)[..., None]
    w2 = torch.exp(l2 - safe).nan_to_num(0.0)[..., None]
    ct = torch.promote_types(o1.dtype, torch.float32)
    out = (o1.to(ct) * w1 + o2.to(ct) * w2).to(o1.dtype)
    return out, lse


class _ContextParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: ShardPlan, scale: float, backend: str, group):
        B, Hkv, n, d = k.shape
        bs = (plan.local or plan.remote).block_size
        N = n * plan.world
        lo = plan.rank * n
        # the received blocks, at their rows of a whole-sequence K/V buffer (only the remote
        # layout reads it, and only those rows)
        kv = None
        if plan.remote is not None:
            kv = torch.empty((2, B, Hkv, N, d), dtype=k.dtype, device=k.device)

        def payload(blocks, empty=False):
            if empty:
                return torch.empty((2, B, Hkv, len(blocks) * bs, d), dtype=k.dtype, device=k.device)
            rows = _rows(blocks, bs, k.device) - lo
            return torch.stack([k.index_select(2, rows), v.index_select(2, rows)])

        def place(blocks, buf):
            kv.index_copy_(3, _rows(blocks, bs, k.device), buf)

        finish = _exchange(plan, group, payload, place, bs, k.device)
        local = _forward_impl(q, k, v, plan.local, scale, backend, None) if plan.local else None
        finish()
        remote = _forward_impl(q, kv[0], kv[1], plan.remote, scale, backend, None) if plan.remote else None
        out, lse = _merge([local, remote])
        ctx.save_for_backward(q, k, v, kv if kv is not None else k.new_empty(0), out, lse)
        ctx.plan, ctx.scale, ctx.backend, ctx.group = plan, scale, backend, group
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, kv, out, lse = ctx.saved_tensors
        plan = ctx.plan
        B, Hkv, n, d = k.shape
        lo = plan.rank * n
        bs = (plan.local or plan.remote).block_size
        if dout is None:
            dout = torch.zeros_like(out)
        ct = torch.promote_types(q.dtype, torch.float32)
        dq = torch.zeros_like(q, dtype=ct)
        g_remote = None
        if plan.remote is not None:
            g_remote = _backward_impl(dout, q, kv[0], kv[1], out, lse, dlse, plan.remote,
                                      ctx.scale, ctx.backend, None)
            dq += g_remote[0]

        def payload(blocks, empty=False):
            # in the kernels' output dtype (what they computed); summed in fp32 on arrival
            if empty:
                return torch.empty((2, B, Hkv, len(blocks) * bs, d), dtype=k.dtype, device=q.device)
            rows = _rows(blocks, bs, q.device)
            return torch.stack([g_remote[1].index_select(2, rows), g_remote[2].index_select(2, rows)])

        arrived = []

        def place(blocks, buf):
            arrived.append((_rows(blocks, bs, q.device) - lo, buf))

        # send the gradients of the blocks we read from each peer back to it, while the local
        # part runs
        finish = _exchange(plan, ctx.group, payload, place, bs, q.device, reverse=True)
        if plan.local is not None:
            dq_l, dk, dv = _backward_impl(dout, q, k, v, out, lse, dlse, plan.local, ctx.scale,
                                          ctx.backend, None)
            dq += dq_l
        else:
            dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        finish()
        for rows, buf in arrived:           # peers' contributions to our blocks, summed in fp32
            dk.index_copy_(2, rows, (dk.index_select(2, rows).to(ct) + buf[0].to(ct)).to(dk.dtype))
            dv.index_copy_(2, rows, (dv.index_select(2, rows).to(ct) + buf[1].to(ct)).to(dv.dtype))
        return dq.to(q.dtype), dk, dv, None, None, None, None


class _ContextParallelCombined(torch.autograd.Function):
    """One call over the rank's shard and the few blocks it receives, placed at their
    positions in a buffer of the key span; used when the exchange is small."""

    @staticmethod
    def forward(ctx, q, k, v, plan: ShardPlan, scale: float, backend: str, group):
        B, Hkv, n, d = k.shape
        layout = plan.combined
        bs = layout.block_size
        lo = plan.rank * n
        k_lo, k_hi = plan.span
        if (k_lo, k_hi) == (lo, lo + n):
            kb, vb, kv = k, v, None
            finish = _exchange(plan, group, lambda blocks, empty=False: _own_rows(k, v, blocks, bs, lo, empty),
                               None, bs, k.device)
            finish()
        else:
            kv = torch.empty((2, B, Hkv, k_hi - k_lo, d), dtype=k.dtype, device=k.device)
            kv[0, :, :, lo - k_lo:lo - k_lo + n] = k
            kv[1, :, :, lo - k_lo:lo - k_lo + n] = v

            def place(blocks, buf):
                kv.index_copy_(3, _rows(blocks, bs, k.device) - k_lo, buf)
            finish = _exchange(plan, group, lambda blocks, empty=False: _own_rows(k, v, blocks, bs, lo, empty),
                               place, bs, k.device)
            finish()
            kb, vb = kv[0], kv[1]
        out, lse = _forward_impl(q, kb, vb, layout, scale, backend, None)
        ctx.save_for_backward(q, kb, vb, out, lse)
        ctx.plan, ctx.scale, ctx.backend, ctx.group = plan, scale, backend, group
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, kb, vb, out, lse = ctx.saved_tensors
        plan = ctx.plan
        B, Hkv, _, d = kb.shape
        n = plan.shard_len
        lo = plan.rank * n
        k_lo = plan.span[0]
        bs = plan.combined.block_size
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dks, dvs = _backward_impl(dout, q, kb, vb, out, lse, dlse, plan.combined, ctx.scale,
                                      ctx.backend, None)
        arrived = []

        def payload(blocks, empty=False):
            if empty:
                return torch.empty((2, B, Hkv, len(blocks) * bs, d), dtype=dks.dtype, device=q.device)
            rows = _rows(blocks, bs, q.device) - k_lo
            return torch.stack([dks.index_select(2, rows), dvs.index_select(2, rows)])

        finish = _exchange(plan, ctx.group, payload, lambda blocks, buf: arrived.append(
            (_rows(blocks, bs, q.device) - lo, buf)), bs, q.device, reverse=True)
        dk = dks[:, :, lo - k_lo:lo - k_lo + n]
        dv = dvs[:, :, lo - k_lo:lo - k_lo + n]
        finish()
        if arrived:
            dk, dv = dk.clone(), dv.clone()
        ct = torch.promote_types(q.dtype, torch.float32)
        for rows, buf in arrived:           # peers' contributions to our blocks, summed in fp32
            dk.index_copy_(2, rows, (dk.index_select(2, rows).to(ct) + buf[0].to(ct)).to(dk.dtype))
            dv.index_copy_(2, rows, (dv.index_select(2, rows).to(ct) + buf[1].to(ct)).to(dv.dtype))
        return dq, dk, dv, None, None, None, None


def _own_rows(k, v, blocks, bs, lo, empty):
    """K and V rows of our ``blocks`` (a peer reads them), or an empty buffer of that size."""
    B, Hkv, _, d = k.shape
    if empty:
        return torch.empty((2, B, Hkv, len(blocks) * bs, d), dtype=k.dtype, device=k.device)
    rows = _rows(blocks, bs, k.device) - lo
    return torch.stack([k.index_select(2, rows), v.index_select(2, rows)])


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, *, group=None,
                     block_size: int = 128, causal: bool = False, scale: Optional[float] = None,
                     window_size: Optional[Tuple[int, int]] = None, return_lse: bool = False,
                     backend: str = "auto"):
    """Context-parallel :func:`sparseflash.sparse_attention` over the ranks of ``group``.

    Args:
        q: ``(batch, num_heads, N/W, head_dim)``, this rank's contiguous shard of the queries
            (rank r holds tokens ``[r*N/W, (r+1)*N/W)``).
        k, v: ``(batch, num_kv_heads, N/W, head_dim)``, the same shard of the keys and values.
        pattern: a :class:`~sparseflash.Pattern`, evaluated on the whole sequence's absolute
            grid (the same on every rank).
        group: the process group (default: the whole world). Every rank must call with the
            same pattern, options and shapes.
        block_size, causal, scale, window_size, return_lse, backend: as in
            :func:`sparseflash.sparse_attention`, over the whole sequence.

    Returns the rank's shard of the output ``(batch, num_heads, N/W, head_dim)`` (and its LSE).
    The shard length must be a multiple of ``block_size`` (a block lives on one rank).
    Packed documents and key-padding masks are not supported across shards.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t)
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a sparseflash Pattern, got {type(pattern).__name__}")
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("group: torch.distributed is not initialised (call init_process_group first)")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool, got {causal!r}")
    _check_block_size(block_size)
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    B, H, n, d = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[2] != n or k.shape[3] != d:
        raise ValueError(f"k and v must be (batch, num_kv_heads, {n}, {d}) like q's shard, got "
                         f"k {tuple(k.shape)} and v {tuple(v.shape)}")
    if k.shape[1] == 0 or H % k.shape[1]:
        raise ValueError(f"q: num_heads {H} must be a multiple of k's num_kv_heads {k.shape[1]}")
    if n == 0 or n % block_size:
        raise ValueError(f"q: the shard length {n} must be a positive multiple of block_size "
                         f"{block_size} (a block lives on one rank)")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share a dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    backend = _resolve_backend(backend, q)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    plan = shard_plan(pattern, n * world, world, rank, block_size, causal, H, check_window(window_size))
    if plan.local is None and plan.remote is None:
        out = torch.zeros_like(q)
        lse = torch.full((B, H, n), float("-inf"), dtype=torch.float32, device=q.device)
        return (out, lse) if return_lse else out
    fn = _ContextParallelCombined if plan.combined is not None else _ContextParallel
    out, lse = fn.apply(q, k, v, plan, scale, backend, group)
    return (out, lse) if return_lse else out
