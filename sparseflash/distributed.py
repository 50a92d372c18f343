"""Context-parallel block-sparse attention over torch.distributed.

Each rank of a process group holds a shard of the sequence (``(B, H, N/W, d)`` of q, k and
v): one contiguous chunk (``sharding="contiguous"``, rank r holds tokens
``[r*N/W, (r+1)*N/W)``) or two chunks of ``N/(2W)`` tokens (``sharding="zigzag"``, rank r
holds chunks r and 2W-1-r of 2W, one after the other), which balances causal work.
:func:`sparse_attention` returns the rank's shard of the output (and LSE) in the same order,
and autograd gives the shards' gradients. :func:`shard` and :func:`shard_index` cut a whole
tensor into a rank's shard.

**One plan, computed on every rank.** Every rank evaluates the pattern once over the whole
sequence (:func:`shard_plan`), so it knows, without asking, which key blocks every rank's
query rows read. Then, per (query block, key-owning rank), the cheaper of two moves:

* the *key blocks* go to the queries (``recv``/``send``): a local window moves one
  neighbouring block per boundary, a global column one block to every rank;
* the *query block* goes to the keys (a *guest*, ``guests_out``/``guests_in``) when it reads
  much of that rank's keys and moving it moves fewer bytes (:data:`GUEST_COST`): a global
  row that reads every key is computed, in pieces, on every rank against that rank's own
  keys, and the pieces are merged through their log-sum-exps on the owner. One query block
  moves instead of a whole shard of keys, and those keys' dK/dV never move.

**One call per rank.** The rank's keys are one buffer holding only what it reads: the
received blocks, packed, next to its own shard (``[left received | own | right received]``);
its queries are its own rows followed by its guests' rows. One :func:`sparse_attention`
call over a layout in the buffer's coordinates computes everything, so dK/dV are written for
exactly the buffer's blocks. The buffer's coordinates move received blocks closer to the
queries than they are; that changes nothing, since every such block is *full* (causal
blocks off the diagonal; non-causal blocks without a window), and the plan checks it, block
by block, against the whole sequence's rule. With ``window_size`` or ``alibi_slopes`` the
received blocks keep their exact offsets (the buffer spans them, gaps unread) and there are
no guests, so the buffer's query-key distances are the sequence's (ALiBi adds them).
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .attention import (_NO_MODS, _backward_impl, _check_mods, _check_padding, _check_scale,
                        _check_score_range, _check_tensor, _forward_impl, _host_ints, _resolve_backend,
                        _rng_ints)
from .compiler import (_check_block_size, _check_table_size, _fwd_blocks, _layout_of, _pattern_blocks,
                       _sequence_blocks, check_window, compile, with_key_padding)
from .layout import BlockLayout
from .pattern import Pattern
from .philox import draw_seed

__all__ = ["sparse_attention", "ShardPlan", "shard_plan", "shard", "shard_index", "SHARDINGS", "RankCost",
           "estimate_ranks"]

SHARDINGS = ("contiguous", "zigzag")

# Guests: the query blocks of rank p that read at least GUEST_MIN_FRACTION of rank r's key
# blocks (the candidates, G) are computed on r when that moves fewer bytes over the link and
# does not unbalance the work. Bytes: a guest block costs about 5 query-sized blocks (q; its
# partial output back; dO and the final O in the backward; dQ back), every key block it
# spares 4 key-sized ones (K, V; dK, dV back): GUEST_COST * H * |G| < Hkv * (|K| - |K'|),
# with K the key blocks p reads from r and K' those its other query blocks still read. Work:
# r's stored blocks plus the moved ones stay at most p's. A global row (one block reading a
# whole shard) goes, and splits its long row over the ranks; dense causal (every block reads
# the shard) keeps moving keys; local windows and random blocks have no candidates.
# GUEST_COST = None makes every candidate a guest (the tests use it to exercise the path).
GUEST_MIN_FRACTION = 0.5
GUEST_COST: Optional[float] = 5 / 4

# The backward's dK/dV kernel runs in two launches, the received blocks' columns first, so
# their dK/dV travel home while the rest computes, when a rank receives at least this
# fraction of its shard's block count (bigbird at 1M on 2 ranks: 2,161 of 4,096). Below it
# the second launch is not worth it: a few received blocks move in microseconds, and a
# global column among them (local | global) would run alone in the first launch.
OVERLAP_MIN_FRACTION = 1 / 8

# Above that fraction the forward's K/V exchange also goes in pieces (batch elements, or KV
# heads when the batch is 1), at most this many, and each piece's attention starts as soon as
# its blocks arrive. Not with dropout (a piece's kernel would number the heads from 0, and the
# backward, one call, would draw another mask), guests, or per-head tables split by head.
PIPELINE_PIECES = 4


def shard_chunks(N: int, world: int, rank: int, sharding: str = "contiguous") -> Tuple[Tuple[int, int], ...]:
    """``(start, length)`` in tokens of the chunks rank ``rank`` holds, in the order its shard
    stacks them: one chunk of N/W (contiguous) or chunks r and 2W-1-r of N/(2W) (zigzag)."""
    if sharding == "contiguous":
        n = N // world
        return ((rank * n, n),)
    c = N // (2 * world)
    return ((rank * c, c), ((2 * world - 1 - rank) * c, c))


def shard_index(N: int, world: int, rank: int, sharding: str = "contiguous", device=None) -> Tensor:
    """Token positions (int64 ``[N/W]``) of rank ``rank``'s shard, in its order."""
    return torch.cat([torch.arange(s, s + n, device=device) for s, n in shard_chunks(N, world, rank, sharding)])


def shard(x: Tensor, world: int, rank: int, sharding: str = "contiguous", dim: int = 2) -> Tensor:
    """Rank ``rank``'s shard of a whole-sequence tensor ``x`` along ``dim`` (a copy)."""
    return x.index_select(dim, shard_index(x.shape[dim], world, rank, sharding, x.device))


def _own_blocks(N: int, world: int, rank: int, bs: int, sharding: str) -> np.ndarray:
    """Absolute key blocks of the rank's shard, in its order: int64 ``[N/W/bs]``."""
    return np.concatenate([np.arange(s // bs, (s + n) // bs, dtype=np.int64)
                           for s, n in shard_chunks(N, world, rank, sharding)])


@dataclass(frozen=True)
class ShardPlan:
    """What one rank computes and exchanges (built on every rank, identically, from the pattern).

    ``layout``: the rank's one call, in buffer coordinates: query rows are the shard's rows
    (``N/W``) then the guests' (``guests_in`` in peer order, a block each); key rows are the
    buffer of ``kv_len`` rows whose rows ``[own_row, own_row + N/W)`` are the rank's own K/V.
    ``recv[p]``/``send[p]``: absolute key blocks this rank receives from / sends to rank p;
    ``recv_slots[p]``: their block slots in the buffer. ``guests_out[p]``: the rank's query
    blocks (absolute) computed on rank p against p's keys; ``guests_in[p]``: rank p's query
    blocks computed here. Each of the rank's blocks is computed once, by exactly one rank.
    """

    rank: int
    world: int
    sharding: str
    shard_len: int
    block_size: int
    layout: BlockLayout
    kv_len: int
    own_row: int
    recv: Tuple[Tuple[int, ...], ...]
    recv_slots: Tuple[Tuple[int, ...], ...]
    send: Tuple[Tuple[int, ...], ...]
    guests_out: Tuple[Tuple[int, ...], ...]
    guests_in: Tuple[Tuple[int, ...], ...]
    own_blocks: Tuple[int, ...]
    # over all ranks (every rank's plan holds the same): the most key blocks a rank
    # receives, and whether any rank hosts guests; ranks agree on the pipelined exchange
    max_blocks_received: int = 0
    any_guests: bool = False
    _indices: dict = field(default_factory=dict, compare=False, repr=False)

    def indices(self, device) -> "_Indices":
        """The plan's block indices as int64 tensors on ``device`` (built once per device)."""
        key = str(torch.device(device))
        got = self._indices.get(key)
        if got is None:
            got = self._indices[key] = _Indices(self, device)
        return got

    @property
    def blocks_received(self) -> int:
        return sum(len(r) for r in self.recv)

    @property
    def num_guests(self) -> int:
        return sum(len(g) for g in self.guests_in)

    def buffer_blocks(self) -> np.ndarray:
        """The absolute key block in each block slot of the key buffer, -1 for the gaps of an
        exact-offset buffer (never read): int64 ``[kv_len / block_size]``."""
        out = np.full(self.kv_len // self.block_size, -1, dtype=np.int64)
        own = self.own_row // self.block_size
        out[own:own + len(self.own_blocks)] = self.own_blocks
        for blocks, slots in zip(self.recv, self.recv_slots):
            out[list(slots)] = blocks
        return out

    def local_block(self, blocks) -> np.ndarray:
        """Block index within the rank's shard of its own absolute blocks (the shard's chunks
        are stacked in ascending order, so ``own_blocks`` is sorted)."""
        return np.searchsorted(np.asarray(self.own_blocks), np.asarray(blocks, dtype=np.int64))


def _document_blocks(pattern: Pattern, docs: Tuple[int, ...], block_size: int, causal: bool,
                     num_heads: int, window):
    """The stored blocks of packed documents on the whole sequence's block grid: ``(head or
    None, I, J, full, table_heads)``. ``docs``: token offsets (``cu_seqlens``), every one a
    multiple of ``block_size``, so each document's own grid (its pattern, blocks and causal
    line start at its first token, as on one GPU) is the sequence's grid moved along the
    diagonal and its blocks keep their full/partial kind. Per document length, the layout
    comes from the compile cache (a training step's lengths repeat)."""
    bs = block_size
    parts = []
    for a, b in zip(docs, docs[1:]):
        if b == a:
            continue
        one = compile(pattern, b - a, block_size=bs, causal=causal, num_heads=num_heads, window_size=window)
        row, col, full = _fwd_blocks(one)
        nq = one.num_q_blocks
        parts.append((row // nq if one.table_heads > 1 else None, row % nq + a // bs, col + a // bs, full))
    th = num_heads if any(h is not None for h, *_ in parts) else 1
    if th > 1:                      # documents with one table for all heads: one per head
        parts = [(h, I, J, f) if h is not None else
                 (np.repeat(np.arange(th, dtype=np.int64), I.size), np.tile(I, th), np.tile(J, th), np.tile(f, th))
                 for h, I, J, f in parts]
    cat = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64) for i in range(1, 4)]
    I, J, full = cat[0], cat[1], cat[2].astype(bool)
    head = np.concatenate([p[0] for p in parts]) if th > 1 else None
    order = np.lexsort((J, I) + ((head,) if head is not None else ()))
    return (head[order] if head is not None else None), I[order], J[order], full[order], th


@functools.lru_cache(maxsize=8)
def _sequence_plan(pattern: Pattern, N: int, world: int, block_size: int, causal: bool,
                   num_heads: int, window, sharding: str, guest_min_fraction: float,
                   guest_cost: Optional[float], num_kv_heads: int, exact: bool = False,
                   docs: Optional[Tuple[int, ...]] = None):
    """Every stored block of the whole sequence and who computes it: ``(head or None, I, J,
    full, table_heads, owner, executor, moved)``; ``moved`` marks blocks whose key block goes
    to the query's owner, ``executor != owner[I]`` marks guests (none when ``exact``, which
    any window implies: a guest's rows would not keep their positions). ``docs``: packed
    documents' token offsets (block multiples), or None for one sequence. O(stored blocks)."""
    bs = block_size
    nb = N // bs
    if docs is None:
        _check_table_size(pattern, N, N, bs, causal, num_heads, window)     # before any keys
        head, I, J, th = _pattern_blocks(pattern, N, N, 0, 0, bs, causal, num_heads, window)
        row, J, full = _sequence_blocks(head, I, J, N, N, 0, 0, bs, causal, window)
        head = row // nb if th > 1 else None
        I = row % nb
    else:
        head, I, J, full, th = _document_blocks(pattern, docs, bs, causal, num_heads, window)
    owner = np.empty(nb, dtype=np.int64)
    for r in range(world):
        owner[_own_blocks(N, world, r, bs, sharding)] = r
    qo, ko = owner[I], owner[J]
    cross = qo != ko
    executor = qo.copy()
    if not exact and cross.any():
        # distinct key blocks each query block reads from each other rank (over all heads)
        reads = I[cross] * world + ko[cross]
        if head is not None:        # one block stored for several heads counts once
            reads = np.unique(reads * nb + J[cross]) // nb
        count = np.bincount(reads, minlength=nb * world)          # [nb * world]
        heavy = cross & (count[I * world + ko] >= max(1.0, guest_min_fraction * nb / world))
        work = np.bincount(qo, minlength=world)                   # stored blocks per rank
        # the cross-rank blocks grouped by (query rank p, key rank r), each group one slice
        # (dense causal at 1M tokens, block 128, on 8 ranks: 33.5M stored blocks, 64 pairs)
        idx = np.flatnonzero(cross)
        pid = qo[idx] * world + ko[idx]
        order = np.argsort(pid, kind="stable")
        idx = idx[order]
        bounds = np.searchsorted(pid[order], np.arange(world * world + 1))

        def distinct(blocks):                                      # distinct block indices
            return int(np.count_nonzero(np.bincount(blocks, minlength=nb)))
        for p in range(world):
            for r in range(world):
                pair = idx[bounds[p * world + r]:bounds[p * world + r + 1]]
                in_g = heavy[pair]
                if not in_g.any():
                    continue
                g = pair[in_g]
                spared = distinct(J[pair]) - distinct(J[pair[~in_g]])
                moved = int(g.size)
                if guest_cost is None or (guest_cost * num_heads * distinct(I[g]) < num_kv_heads * spared
                                          and work[r] + moved <= work[p]):
                    executor[g] = r
                    work[p] -= moved
                    work[r] += moved
    moved = cross & (executor == qo)
    return head, I, J, full, th, owner, executor, moved


def _by_peer(values: np.ndarray, peers: np.ndarray, world: int, nb: int) -> Tuple[Tuple[int, ...], ...]:
    """The distinct ``values`` (block indices below ``nb``) of each peer, ascending."""
    seen = np.zeros(world * nb, dtype=bool)
    seen[peers * nb + values] = True
    return tuple(tuple(np.flatnonzero(seen[p * nb:(p + 1) * nb]).tolist()) for p in range(world))


@functools.lru_cache(maxsize=64)
def shard_plan(pattern: Pattern, N: int, world: int, rank: int, block_size: int, causal: bool,
               num_heads: int, window=None, sharding: str = "contiguous",
               num_kv_heads: Optional[int] = None, exact: bool = False,
               docs: Optional[Tuple[int, ...]] = None) -> ShardPlan:
    """The :class:`ShardPlan` of ``rank`` (cached); O(stored blocks of the whole sequence)
    (and O(W^2) passes over the blocks read across ranks to choose guests). ``exact`` (and
    any ``window``): the buffer keeps every received block at its exact offset from the
    shard (it spans them; the gaps are never read) and no query block is a guest, so the
    buffer's query-key distances are the sequence's (ALiBi needs them); contiguous shards only.
    ``docs``: packed documents' token offsets (``cu_seqlens``, each a multiple of
    ``block_size``): the blocks are each document's, on its own grid."""
    bs = block_size
    exact = exact or window is not None
    if exact and sharding != "contiguous":
        raise ValueError(f"sharding={sharding!r}: exact key offsets (window_size, alibi_slopes) need "
                         f"sharding='contiguous'")
    head, I, J, full, th, owner, executor, moved = _sequence_plan(
        pattern, N, world, bs, causal, num_heads, window, sharding, GUEST_MIN_FRACTION, GUEST_COST,
        num_kv_heads or num_heads, exact, docs)
    n = N // world
    own = _own_blocks(N, world, rank, bs, sharding)
    local = np.full(N // bs, -1, dtype=np.int64)
    local[own] = np.arange(own.size)
    qo, ko = owner[I], owner[J]
    recv = _by_peer(J[moved & (qo == rank)], ko[moved & (qo == rank)], world, N // bs)
    send = _by_peer(J[moved & (ko == rank)], qo[moved & (ko == rank)], world, N // bs)
    guest = executor != qo
    guests_in = _by_peer(I[guest & (executor == rank)], qo[guest & (executor == rank)], world, N // bs)
    guests_out = _by_peer(I[guest & (qo == rank)], executor[guest & (qo == rank)], world, N // bs)

    # buffer coordinates: received blocks packed around the own blocks (exact offsets with a
    # window or ALiBi), own blocks in shard order, guests' query blocks after the shard's
    received = np.array(sorted(b for r in recv for b in r), dtype=np.int64)
    slot = np.full(N // bs, -1, dtype=np.int64)
    if not exact:
        left, right = received[received < own.max()], received[received > own.max()]
        L = left.size
        slot[left] = np.arange(L)
        slot[own] = L + np.arange(own.size)
        slot[right] = L + own.size + np.arange(right.size)
        kv_blocks = L + own.size + right.size
    else:                                   # contiguous shards only (checked by the caller)
        lo = min(int(own.min()), int(received.min(initial=own.min())))
        hi = max(int(own.max()), int(received.max(initial=own.max())))
        L = int(own.min()) - lo
        slot[lo:hi + 1] = np.arange(hi + 1 - lo)
        kv_blocks = hi + 1 - lo
    q_slot = local.copy()
    hosted = np.array([b for g in guests_in for b in g], dtype=np.int64)
    q_slot[hosted] = own.size + np.arange(hosted.size)   # a hosted block is never our own

    mine = executor == rank
    h = head[mine] if head is not None else None
    Iv, Jv = q_slot[I[mine]] + L, slot[J[mine]]
    order = np.lexsort((Jv, Iv) + ((h,) if h is not None else ()))
    h = h[order] if h is not None else None
    Iv, Jv, true_full = Iv[order], Jv[order], full[mine][order]
    q_len, kv_len = (own.size + hosted.size) * bs, kv_blocks * bs
    args = (q_len, kv_len, L * bs, 0, bs, causal, window)
    _, _, buffer_full = _sequence_blocks(h, Iv, Jv, *args)
    if buffer_full.size != true_full.size or not (buffer_full == true_full).all():
        raise ValueError("distributed: the buffer's coordinates change the mask of some block (a "
                         "bug: report the pattern, causal and window_size)")
    layout = _layout_of(h, Iv, Jv, th, q_len, kv_len, L * bs, 0, bs, causal, num_heads, window,
                        time.perf_counter())
    recv_slots = tuple(tuple(slot[list(r)].tolist()) for r in recv)
    # distinct key blocks each rank receives (a block may serve several of its rows)
    seen = np.zeros(world * (N // bs), dtype=bool)
    seen[qo[moved] * (N // bs) + J[moved]] = True
    max_received = int(seen.reshape(world, -1).sum(1).max(initial=0))
    return ShardPlan(rank, world, sharding, n, bs, layout, kv_len, L * bs, recv, recv_slots, send,
                     guests_out, guests_in, tuple(own.tolist()), max_blocks_received=max_received,
                     any_guests=bool(guest.any()))


# ----------------------------------------------------------------------------- exchanges
# The exchange moves whole blocks. Its copies go through _blocks views: a (B, H, rows, d)
# tensor as (B, H, rows / bs, bs * d) blocks of 8-byte integers, so a gather, scatter or copy
# is one launch moving 8 bytes per element. Element-wise in bf16 (index_select over token
# rows, a strided copy_) they ran at a third of memory speed: 31 of bigbird's 92 ms per step
# at 1M tokens on two H200s went to them (benchmarks/results/h200x2-distributed/run7-block-moves,
# profile_*_rank0.txt).
# The indices live on the device, built once per plan and device: a host-to-device copy of
# pageable memory waits for the stream, and each one left the GPU idle while Python caught up.
def _blocks(x: Tensor, bs: int) -> Tensor:
    """``x`` (..., rows, d) with contiguous rows as ``(..., rows // bs, bs * d)``, viewed as the
    widest integer type a block's bytes allow (a view: writes go to ``x``)."""
    *lead, n, d = x.shape
    y = x.view(*lead, n // bs, bs * d)
    for t in (torch.int64, torch.int32):
        try:
            return y.view(t)
        except RuntimeError:      # a block's bytes or the view's offset not a multiple of t's size
            continue
    return y


def _gather(x: Tensor, blocks: Tensor, bs: int, out: Optional[Tensor] = None) -> Tensor:
    """Blocks ``blocks`` (int64, on x's device) of ``x`` (B, H, rows, d) along the rows, as a
    contiguous ``(B, H, len(blocks) * bs, d)`` tensor (``out`` if given)."""
    if out is None:
        out = x.new_empty(x.shape[:-2] + (blocks.numel() * bs, x.shape[-1]))
    torch.index_select(_blocks(x, bs), x.dim() - 2, blocks, out=_blocks(out, bs))
    return out


def _scatter(x: Tensor, blocks: Tensor, src: Tensor, bs: int) -> None:
    """``x``'s blocks ``blocks`` (along the rows) = ``src``'s, in place."""
    _blocks(x, bs).index_copy_(x.dim() - 2, blocks, _blocks(src, bs))


def _add_blocks(x: Tensor, blocks: Tensor, src: Tensor, bs: int) -> None:
    """``x``'s blocks ``blocks`` += ``src``'s, in place, each sum rounded once to x's dtype
    (gather, add, scatter: ``index_add_`` in bf16 runs on atomics, 4.2 ms for 1.1 GB on an
    H200 against about 1 ms for the three passes)."""
    part = _gather(x, blocks, bs)
    part += src
    _scatter(x, blocks, part, bs)


class _Indices:
    """A plan's block indices on one device (int64): ``send[p]`` and ``guests_out[p]`` in the
    shard, ``recv[p]`` in the key buffer, ``guests_in[p]`` in the query buffer."""

    def __init__(self, plan: "ShardPlan", device):
        def t(values):
            return torch.as_tensor(np.asarray(values, dtype=np.int64).reshape(-1), device=device)
        W, nb = plan.world, plan.shard_len // plan.block_size
        self.send = [t(plan.local_block(plan.send[p])) for p in range(W)]
        self.recv = [t(plan.recv_slots[p]) for p in range(W)]
        self.guests_out = [t(plan.local_block(plan.guests_out[p])) for p in range(W)]
        starts = nb + np.cumsum([0] + [len(g) for g in plan.guests_in])
        self.guests_in = [t(np.arange(starts[p], starts[p + 1])) for p in range(W)]
        # the key buffer's block columns whose dK/dV go home (host, for the split backward)
        self.received_columns = np.zeros(plan.kv_len // plan.block_size, dtype=bool)
        for slots in plan.recv_slots:
            self.received_columns[list(slots)] = True


def _pipeline(plan: "ShardPlan", B: int, Hkv: int, mods, padded: bool = False) -> Tuple[int, int]:
    """(pieces, dim) of the forward's pipelined exchange: dim 0 splits the batch, 1 the KV
    heads (batch 1); (1, 0) when it does not apply. ``padded``: the call has a key-padding
    mask (its layout has a table set per batch element, which a piece of the batch cannot
    take)."""
    # from what every rank's plan holds alike: both ends of each message must cut it the same
    if (mods[2] > 0 or mods[1] is not None or plan.any_guests
            or plan.max_blocks_received < OVERLAP_MIN_FRACTION * len(plan.own_blocks)):
        return 1, 0
    dim = 0 if B > 1 else 1
    if dim == 1 and plan.layout.table_heads > 1 or dim == 0 and padded:
        return 1, 0
    size = B if dim == 0 else Hkv
    pieces = max(p for p in range(1, min(PIPELINE_PIECES, size) + 1) if size % p == 0)
    return pieces, dim


def _p2p(plan: ShardPlan, group, messages):
    """Start point-to-point messages; ``messages`` is a list of ``(peer, tensor to send or
    None, buffer to receive into or None)``. Every rank lists its messages in the same order
    of kinds, so each send meets its receive. Returns a function that waits for all (on the
    GPU, it makes the current stream wait: the host goes on)."""
    ops = []
    for p, out, into in messages:
        peer = dist.get_global_rank(group, p) if group is not None else p
        if out is not None:
            ops.append(dist.P2POp(dist.isend, out.contiguous(), peer, group))
        if into is not None:
            ops.append(dist.P2POp(dist.irecv, into, peer, group))
    works = dist.batch_isend_irecv(ops) if ops else []

    def wait():
        for w in works:
            w.wait()
    return wait


def _merge_into(out: Tensor, lse: Tensor, blocks: Tensor, o2: Tensor, l2: Tensor, bs: int) -> None:
    """Merge a partial result ``(o2, l2)`` over disjoint keys into blocks ``blocks`` of ``out``
    and ``lse`` (in place), through the log-sum-exps, in fp32."""
    ct = torch.promote_types(out.dtype, torch.float32)
    o1 = _gather(out, blocks, bs).to(ct)
    l1 = _gather(lse.unsqueeze(-1), blocks, bs).squeeze(-1).to(ct)
    l2 = l2.to(ct)
    m = torch.logaddexp(l1, l2)
    safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    w1 = torch.exp(l1 - safe).nan_to_num(0.0)[..., None]
    w2 = torch.exp(l2 - safe).nan_to_num(0.0)[..., None]
    _scatter(out, blocks, (o1 * w1 + o2.to(ct) * w2).to(out.dtype), bs)
    _scatter(lse.unsqueeze(-1), blocks, m.to(lse.dtype).unsqueeze(-1), bs)


def _gathered_mask(kpm: Tensor, group, sharding: str) -> np.ndarray:
    """The whole sequence's key-padding mask, bool ``(B, N)`` on the host, from every rank's
    shard (int8 ``(B, N/W)`` on the rank's device; one all-gather)."""
    world = dist.get_world_size(group)
    if dist.get_backend(group) == "gloo":          # gloo gathers host tensors
        kpm = kpm.cpu()
    parts = [torch.empty_like(kpm) for _ in range(world)]
    dist.all_gather(parts, kpm, group=group)
    B, n = kpm.shape
    full = np.zeros((B, n * world), dtype=bool)
    for r, part in enumerate(parts):
        full[:, shard_index(n * world, world, r, sharding).numpy()] = part.cpu().numpy() != 0
    return full


def _buffer_padding(plan: ShardPlan, full: np.ndarray, device) -> Tuple[BlockLayout, Tensor]:
    """The rank's layout with a table set per batch element (blocks of no valid key dropped,
    partly padded ones partial) and the key buffer's mask as the kernels take it (int8
    ``(B, kv_len)``), from the whole sequence's mask ``full`` (bool ``(B, N)``). The gaps of
    an exact-offset buffer are never read; their keys count as padding."""
    bs = plan.block_size
    blocks = plan.buffer_blocks()
    B = full.shape[0]
    per_block = full.reshape(B, -1, bs)                          # [B, N / bs, bs]
    buf = np.where((blocks >= 0)[None, :, None], per_block[:, np.maximum(blocks, 0)], False)
    buf = buf.reshape(B, plan.kv_len)                            # [B, kv_len]
    kpm = torch.from_numpy(buf).to(device).view(torch.int8)     # before the layout freezes buf
    return with_key_padding(plan.layout, buf), kpm


class _ContextParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: ShardPlan, scale: float, backend: str, group, mods=_NO_MODS,
                padding: Optional[Tuple[BlockLayout, Tensor]] = None):
        # padding: the plan's layout with a table set per batch element and the key buffer's
        # padding mask (int8 (B, kv_len)), or None
        layout, kpm = padding if padding is not None else (plan.layout, None)
        B, H, n, d = q.shape
        Hkv = k.shape[1]
        bs, W = plan.block_size, plan.world
        ix = plan.indices(q.device)
        # the block views need contiguous rows (a no-op for the usual contiguous shards)
        qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
        # the K/V exchange in P pieces (batch elements, or KV heads with their query heads),
        # each its own point-to-point batch: piece i's attention runs while i+1 travels
        Pm, dim = _pipeline(plan, B, Hkv, mods, padded=kpm is not None)

        def kv_part(x, i):                      # x: (..., B, Hkv, rows, d)
            if Pm == 1:
                return x
            size = (B if dim == 0 else Hkv) // Pm
            return x.narrow(x.dim() - 4 + dim, i * size, size)

        def q_part(x, i):                       # x: (B, H, ...)
            if Pm == 1:
                return x
            size = (B if dim == 0 else H) // Pm
            return x.narrow(dim, i * size, size)

        waits, arrived, guest_q = [], [], []
        for i in range(Pm):
            msgs, got = [], []
            kp, vp = kv_part(kc, i), kv_part(vc, i)
            for p in range(W):                               # K/V blocks
                out_kv = into = None
                if plan.send[p]:
                    out_kv = k.new_empty((2,) + tuple(kp.shape[:2]) + (len(plan.send[p]) * bs, d))
                    _gather(kp, ix.send[p], bs, out=out_kv[0])
                    _gather(vp, ix.send[p], bs, out=out_kv[1])
                if plan.recv[p]:
                    into = k.new_empty((2,) + tuple(kp.shape[:2]) + (len(plan.recv[p]) * bs, d))
                    got.append((ix.recv[p], into))
                msgs.append((p, out_kv, into))
            if i == 0:
                for p in range(W):                           # guests' query rows (Pm == 1)
                    out_q = _gather(qc, ix.guests_out[p], bs) if plan.guests_out[p] else None
                    into = q.new_empty((B, H, len(plan.guests_in[p]) * bs, d)) if plan.guests_in[p] else None
                    msgs.append((p, out_q, into))
                    if into is not None:
                        guest_q.append((ix.guests_in[p], into))
            waits.append(_p2p(plan, group, msgs))
            arrived.append(got)
        # keys: [left received | own | right received]; queries: [own | guests]. The own
        # shard's copy runs while the blocks travel. (On a side stream beside the previous
        # piece's attention it saved nothing on an H200: 11.31 against 11.19 ms for bigbird's
        # rank at 1M, copy kernels or copy engine alike; benchmarks/pieces_probe.py.)
        kb, vb, kv = k, v, None
        if plan.kv_len != n:
            kv = k.new_empty((2, B, Hkv, plan.kv_len, d))
            own = slice(plan.own_row // bs, (plan.own_row + n) // bs)
            _blocks(kv[0], bs)[:, :, own].copy_(_blocks(kc, bs))
            _blocks(kv[1], bs)[:, :, own].copy_(_blocks(vc, bs))
            kb, vb = kv[0], kv[1]
        qb = q
        if plan.num_guests:
            qb = q.new_empty((B, H, n + plan.num_guests * bs, d))
            _blocks(qb, bs)[:, :, :n // bs].copy_(_blocks(qc, bs))
        if Pm > 1:
            out_b = q.new_empty(qb.shape)
            lse_b = q.new_empty(qb.shape[:3], dtype=torch.float64 if q.dtype == torch.float64 else torch.float32)
        for i in range(Pm):
            waits[i]()
            for blocks, buf in arrived[i]:
                _scatter(kv_part(kv, i), blocks, buf, bs)
            for blocks, buf in guest_q:
                _scatter(qb, blocks, buf, bs)
            if Pm == 1:
                out_b, lse_b = _forward_impl(qb, kb, vb, layout, scale, backend, kpm, mods)
            else:
                _forward_impl(q_part(qb, i), kv_part(kb, i), kv_part(vb, i), layout, scale,
                              backend, kpm, mods, out=q_part(out_b, i), lse=q_part(lse_b, i))
        out, lse = (out_b[:, :, :n], lse_b[:, :, :n]) if plan.num_guests else (out_b, lse_b)
        if plan.num_guests or any(plan.guests_out):
            msgs, parts = [], []
            for p in range(W):          # guests' partial results go home
                send = into = None
                if plan.guests_in[p]:
                    send = (_gather(out_b, ix.guests_in[p], bs),
                            _gather(lse_b.unsqueeze(-1), ix.guests_in[p], bs).squeeze(-1))
                if plan.guests_out[p]:
                    m = len(plan.guests_out[p]) * bs
                    into = (out.new_empty((B, H, m, d)), lse.new_empty((B, H, m)))
                    parts.append((ix.guests_out[p], into))
                msgs.append((p, send and send[0], into and into[0]))
                msgs.append((p, send and send[1], into and into[1]))
            _p2p(plan, group, msgs)()
            for blocks, (o2, l2) in parts:
                _merge_into(out, lse, blocks, o2, l2, bs)
        ctx.save_for_backward(q, k, v)
        ctx.buffers = (qb, kb, vb, out_b, lse_b)
        ctx.plan, ctx.scale, ctx.backend, ctx.group, ctx.mods = plan, scale, backend, group, mods
        ctx.layout, ctx.kpm = layout, kpm
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v = ctx.saved_tensors
        qb, kb, vb, out_b, lse_b = ctx.buffers
        ctx.buffers = None
        plan = ctx.plan
        B, H, n, d = q.shape
        Hkv = k.shape[1]
        bs, W = plan.block_size, plan.world
        ix = plan.indices(q.device)
        if dout is None:
            dout = torch.zeros_like(q)
        dout = dout.contiguous()
        do_b = dout
        dlse_b = dlse
        if plan.num_guests or any(plan.guests_out):
            # guests need dO, the final O and LSE, and dLSE of their rows (dLSE is always sent:
            # the hosts cannot know whether the owner's is None)
            if plan.num_guests:
                do_b = dout.new_empty(qb.shape)
                _blocks(do_b, bs)[:, :, :n // bs].copy_(_blocks(dout, bs))
                dlse_b = lse_b.new_zeros(lse_b.shape)
                if dlse is not None:
                    dlse_b[:, :, :n] = dlse
            msgs, arrived = [], []
            for p in range(W):
                send = into = None
                if plan.guests_out[p]:
                    blocks = ix.guests_out[p]
                    m = len(plan.guests_out[p]) * bs
                    od = out_b.new_empty((2, B, H, m, d))
                    _gather(dout, blocks, bs, out=od[0])
                    _gather(out_b, blocks, bs, out=od[1])
                    ll = lse_b.new_zeros((2, B, H, m))
                    _gather(lse_b.unsqueeze(-1), blocks, bs, out=ll[0].unsqueeze(-1))
                    if dlse is not None:
                        _gather(dlse.to(lse_b.dtype).contiguous().unsqueeze(-1), blocks, bs,
                                out=ll[1].unsqueeze(-1))
                    send = (od, ll)
                if plan.guests_in[p]:
                    m = len(plan.guests_in[p]) * bs
                    into = (out_b.new_empty((2, B, H, m, d)), lse_b.new_empty((2, B, H, m)))
                    arrived.append((ix.guests_in[p], into))
                msgs.append((p, send and send[0], into and into[0]))
                msgs.append((p, send and send[1], into and into[1]))
            _p2p(plan, ctx.group, msgs)()
            # the guests' rows lie outside the views returned as out and lse: writing them
            # through .data leaves the views' version (autograd's in-place check) alone
            for blocks, (od, ll) in arrived:
                _scatter(do_b, blocks, od[0], bs)
                _scatter(out_b.data, blocks, od[1], bs)
                _scatter(lse_b.data.unsqueeze(-1), blocks, ll[0].unsqueeze(-1), bs)
                _scatter(dlse_b.unsqueeze(-1), blocks, ll[1].unsqueeze(-1), bs)
        # gradients of received key blocks and of guests' rows go home, in the kernels' dtype.
        # With many received blocks the dK/dV kernel runs in two parts, their columns first,
        # and the sends travel while the rest computes.
        msgs, arrived_kv, arrived_q, waits = [], [], [], []

        def send_home(dq_b, dk_b, dv_b):
            for p in range(W):
                send = into = None
                if plan.recv[p]:
                    send = dk_b.new_empty((2, B, Hkv, len(plan.recv[p]) * bs, d))
                    _gather(dk_b, ix.recv[p], bs, out=send[0])
                    _gather(dv_b, ix.recv[p], bs, out=send[1])
                if plan.send[p]:
                    into = dk_b.new_empty((2, B, Hkv, len(plan.send[p]) * bs, d))
                    arrived_kv.append((ix.send[p], into))
                msgs.append((p, send, into))
            for p in range(W):
                send = _gather(dq_b, ix.guests_in[p], bs) if plan.guests_in[p] else None
                into = None
                if plan.guests_out[p]:
                    into = dq_b.new_empty((B, H, len(plan.guests_out[p]) * bs, d))
                    arrived_q.append((ix.guests_out[p], into))
                msgs.append((p, send, into))
            waits.append(_p2p(plan, ctx.group, msgs))

        split = plan.blocks_received >= OVERLAP_MIN_FRACTION * len(plan.own_blocks)
        dq_b, dk_b, dv_b = _backward_impl(do_b, qb, kb, vb, out_b, lse_b, dlse_b, ctx.layout,
                                          ctx.scale, ctx.backend, ctx.kpm, ctx.mods,
                                          dkdv_first=ix.received_columns if split else None,
                                          between=send_home)
        wait, = waits
        dq = dq_b[:, :, :n]
        dk = dk_b[:, :, plan.own_row:plan.own_row + n]
        dv = dv_b[:, :, plan.own_row:plan.own_row + n]
        wait()
        for blocks, buf in arrived_kv:        # peers' contributions to our blocks
            _add_blocks(dk, blocks, buf[0], bs)
            _add_blocks(dv, blocks, buf[1], bs)
        for blocks, buf in arrived_q:
            _add_blocks(dq, blocks, buf, bs)
        return dq, dk, dv, None, None, None, None, None, None


def _check_plan_args(pattern, sharding: str, block_size: int, window_size):
    """The checks a plan's arguments need, for a call and for its estimate: the window."""
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a sparseflash Pattern, got {type(pattern).__name__}")
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}, got {sharding!r}")
    _check_block_size(block_size)
    return check_window(window_size)


def _document_offsets(cu_seqlens: Optional[Tensor], total: int, block_size: int) -> Optional[Tuple[int, ...]]:
    """``cu_seqlens`` checked and on the host (one sync), each offset a block multiple, or None."""
    if cu_seqlens is None:
        return None
    docs = _host_ints("cu_seqlens", cu_seqlens, total)
    odd = [x for x in docs if x % block_size]
    if odd:
        raise ValueError(f"cu_seqlens: across shards every document offset must be a multiple of block_size "
                         f"{block_size}, got {odd[:4]}; pad each document to a multiple and mask the padded "
                         f"keys with key_padding_mask")
    return docs


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, *, group=None,
                     block_size: int = 128, causal: bool = False, scale: Optional[float] = None,
                     window_size: Optional[Tuple[int, int]] = None, return_lse: bool = False,
                     backend: str = "auto", sharding: str = "contiguous", softcap: float = 0.0,
                     dropout_p: float = 0.0, alibi_slopes: Optional[Tensor] = None,
                     key_padding_mask: Optional[Tensor] = None, cu_seqlens: Optional[Tensor] = None):
    """Context-parallel :func:`sparseflash.sparse_attention` over the ranks of ``group``.

    Args:
        q: ``(batch, num_heads, N/W, head_dim)``, this rank's shard of the queries, laid out
            by ``sharding`` (:func:`shard` cuts it from a whole tensor).
        k, v: ``(batch, num_kv_heads, N/W, head_dim)``, the same shard of the keys and values.
        pattern: a :class:`~sparseflash.Pattern`, evaluated on the whole sequence's absolute
            grid (the same on every rank).
        group: the process group (default: the whole world). Every rank must call with the
            same pattern, options and shapes, and run the backward if any rank does.
        block_size, causal, scale, window_size, return_lse, backend: as in
            :func:`sparseflash.sparse_attention`, over the whole sequence.
        sharding: ``"contiguous"`` (rank r holds tokens ``[r*N/W, (r+1)*N/W)``) or
            ``"zigzag"`` (rank r holds chunks r and 2W-1-r of 2W chunks of N/(2W) tokens,
            in that order): causal attention's work per rank is then equal for dense and
            near-equal for any pattern. Rule of thumb: zigzag for causal, contiguous
            otherwise. Zigzag does not take ``window_size`` (a window's work is already
            balanced on contiguous shards).

        softcap: as in :func:`sparseflash.sparse_attention`; the shards equal the one-process
            result.
        dropout_p: as in :func:`sparseflash.sparse_attention`: each rank draws a Philox seed
            and offset from its default generator (``torch.manual_seed`` reproduces a call) and
            folds its rank into the seed, so ranks seeded alike still drop independently. The
            mask is drawn over each rank's buffer coordinates, so it is not the one-process
            call's mask: equal in distribution, not bit for bit. The backward regenerates it.
        alibi_slopes: as in :func:`sparseflash.sparse_attention` (``(num_heads,)`` or
            ``(batch, num_heads)`` float32), the bias over the whole sequence's positions; the
            shards equal the one-process result. Needs ``sharding="contiguous"``. The rank's
            key buffer then keeps every received block at its true distance from the shard
            (it spans from the first block read to the last; the gaps are allocated, never
            read or sent), and no query block is computed on another rank: a global column
            makes the buffer reach back to the sequence's start.
        key_padding_mask: bool ``(batch, N/W)``, this rank's shard of the keys' mask (True =
            the key may be attended), cut like ``k`` (``shard(mask, world, rank, sharding,
            dim=1)``). The ranks gather the shards (one all-gather of ``batch * N`` bytes)
            and each builds its buffer's mask and a table set per batch element, as
            :func:`sparseflash.sparse_attention` does; the shards equal the one-process
            result. Rows with no valid key give 0 and an LSE of -inf. It reads the mask on
            the host (a device sync), and the forward's exchange is not pipelined over the
            batch.
        cu_seqlens: int32/int64 ``(num_docs + 1,)``, packed documents' offsets over the whole
            sequence (``0 ... N``, the same on every rank; batch must be 1), as in
            :func:`sparseflash.sparse_attention`: each document is its own sequence (pattern,
            blocks and causal line start at its first token) and no token attends another
            document's. Across shards every offset must be a multiple of ``block_size``: pad
            each document to a multiple and mask the padded keys with ``key_padding_mask``,
            which gives the real tokens exactly the one-GPU result of the unpadded documents.
            The plan is built per set of documents (host, O(stored blocks); a layout per
            document length comes from the compile cache).

    Returns the rank's shard of the output ``(batch, num_heads, N/W, head_dim)`` (and its LSE),
    in the shard's order. The shard length must be a multiple of ``block_size`` (of
    ``2 * block_size`` for zigzag: a block lives on one rank).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t)
    window = _check_plan_args(pattern, sharding, block_size, window_size)
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("group: torch.distributed is not initialised (call init_process_group first)")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool, got {causal!r}")
    if sharding == "zigzag" and window is not None:
        raise ValueError("sharding='zigzag' does not take window_size (use 'contiguous': a window's "
                         "work is balanced there)")
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    B, H, n, d = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[2] != n or k.shape[3] != d:
        raise ValueError(f"k and v must be (batch, num_kv_heads, {n}, {d}) like q's shard, got "
                         f"k {tuple(k.shape)} and v {tuple(v.shape)}")
    if k.shape[1] == 0 or H % k.shape[1]:
        raise ValueError(f"q: num_heads {H} must be a multiple of k's num_kv_heads {k.shape[1]}")
    unit = block_size * (2 if sharding == "zigzag" else 1)
    if n == 0 or n % unit:
        raise ValueError(f"q: the shard length {n} must be a positive multiple of {unit} "
                         f"(block_size {block_size}{' x 2 chunks' if unit != block_size else ''}: "
                         f"a block lives on one rank)")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share a dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if alibi_slopes is not None and sharding != "contiguous":
        raise ValueError(f"alibi_slopes needs sharding='contiguous' (got {sharding!r}): the bias needs "
                         f"each received key block at its true distance from the shard's queries, "
                         f"which a zigzag shard's two chunks cannot both keep")
    alibi = _check_mods(dropout_p, softcap, alibi_slopes, q, span=n * world)
    backend = _resolve_backend(backend, q)
    scale = _check_scale(scale, d, q.dtype)
    _check_score_range(q, k, scale, group=group)
    rng = (0, 0)
    if dropout_p > 0:
        seed, offset = _rng_ints(draw_seed())
        rng = (seed ^ (rank << 41), offset)         # the rank in the seed: independent streams
    mods = (float(softcap), alibi, float(dropout_p), rng)
    kpm = _check_padding(key_padding_mask, B, n, q.device, length="N/W, the rank's shard")
    docs = _document_offsets(cu_seqlens, n * world, block_size)
    if docs is not None and B != 1:
        raise ValueError(f"cu_seqlens: packed documents need q, k, v of batch 1 (1, H, N/W, d), got batch {B}")
    plan = shard_plan(pattern, n * world, world, rank, block_size, causal, H, window, sharding, k.shape[1],
                      exact=alibi is not None, docs=docs)
    padding = None if kpm is None else _buffer_padding(plan, _gathered_mask(kpm, group, sharding), q.device)
    out, lse = _ContextParallel.apply(q, k, v, plan, scale, backend, group, mods, padding)
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------- cost per rank
@dataclass(frozen=True)
class RankCost:
    """One rank's share of a context-parallel call (:func:`estimate_ranks`)."""

    rank: int
    blocks: int                 # stored blocks it computes, over all heads (its layout's nnz)
    key_blocks_received: int    # key blocks that come from other ranks
    guest_blocks: int           # other ranks' query blocks it computes
    kv_bytes_in: int            # their K and V in the forward (the backward sends dK, dV home: as many)
    forward_ms: float           # the estimate of its one call over its buffers
    forward_backward_ms: float


def estimate_ranks(pattern: Pattern, seq_len: int, world: int, *, head_dim: int, num_heads: int = 1,
                   num_kv_heads: Optional[int] = None, batch: int = 1, block_size: int = 128,
                   causal: bool = False, sharding: str = "contiguous",
                   window_size: Optional[Tuple[int, int]] = None,
                   cu_seqlens: Optional[Union[Sequence[int], Tensor]] = None,
                   dtype: torch.dtype = torch.bfloat16, device="h100", dropout_p: float = 0.0,
                   softcap: float = 0.0, alibi: bool = False) -> List[RankCost]:
    """What each of ``world`` ranks of :func:`sparse_attention` would compute and receive, and
    :func:`sparseflash.estimate`'s time for its one call, before running it (host only; the
    plans it builds are the calls' own, cached). The slowest rank's time bounds the step from
    below; the exchange (``kv_bytes_in`` each way) overlaps it only in part (docs/distributed.md,
    "Model and estimate"). Arguments as in :func:`sparse_attention` and
    :func:`sparseflash.estimate`; ``alibi=True`` plans the exact-offset buffer ALiBi needs."""
    from .estimate import estimate

    window = _check_plan_args(pattern, sharding, block_size, window_size)
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be a positive int (ranks), got {world!r}")
    unit = world * block_size * (2 if sharding == "zigzag" else 1)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0 or seq_len % unit:
        raise ValueError(f"seq_len must be a positive multiple of {unit} (world x block_size"
                         f"{' x 2 for zigzag' if sharding == 'zigzag' else ''}: a block lives on one rank), "
                         f"got {seq_len!r}")
    if (window is not None or alibi) and sharding != "contiguous":
        raise ValueError(f"sharding={sharding!r}: window_size and alibi need sharding='contiguous'")
    docs = _document_offsets(None if cu_seqlens is None else torch.as_tensor(cu_seqlens), seq_len, block_size)
    hkv = num_kv_heads or num_heads
    e = torch.tensor([], dtype=dtype).element_size()
    options = dict(batch=batch, dtype=dtype, device=device, dropout_p=dropout_p, softcap=softcap, alibi=alibi)
    costs = []
    for rank in range(world):
        plan = shard_plan(pattern, seq_len, world, rank, block_size, causal, num_heads, window, sharding, hkv,
                          exact=alibi, docs=docs)
        costs.append(RankCost(
            rank, plan.layout.nnz, plan.blocks_received, plan.num_guests,
            2 * plan.blocks_received * block_size * hkv * head_dim * e * batch,
            estimate(plan.layout, head_dim, backward=False, **options).predicted_ms,
            estimate(plan.layout, head_dim, backward=True, **options).predicted_ms))
    return costs
