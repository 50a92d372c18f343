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

**Three calls per rank, the exchange beside them.** The rank's blocks fall in a *local*
part (its queries against its own keys: the shard's tensors as given, nothing copied), a
*remote* part (its queries against the received key blocks, packed into a buffer of their
own) and a *hosted* part (the guests' rows against its own keys). The forward starts the
exchanges, runs the local part while they travel, then the hosted and the remote parts,
and merges the remote part's output into the local one through the log-sum-exps (one
fp32 pass, a Triton kernel on GPUs). The backward runs the remote part first, so that the
received blocks' dK/dV travel home while the local part runs. Received blocks sit closer to
the queries in the remote part's coordinates than they are; that changes nothing, since
every such block is *full* (causal blocks off the diagonal; non-causal blocks without a
window), and the plan checks it, block by block, against the whole sequence's rule. With
``window_size`` the remote part keeps exact offsets instead: one part left of the shard and
one right, each spanning its blocks.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .attention import _backward_impl, _check_tensor, _forward_impl, _resolve_backend
from .compiler import _check_block_size, _layout_of, _pattern_blocks, _sequence_blocks, check_window
from .layout import BlockLayout
from .pattern import Pattern

__all__ = ["sparse_attention", "ShardPlan", "shard_plan", "shard", "shard_index", "SHARDINGS"]

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

# False waits for every exchange as soon as it starts (the compute never runs beside it):
# the benchmark's reference for how much of the exchange the overlap hides.
OVERLAP = True


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
class RemotePart:
    """One kernel call of the rank's query rows against key blocks received from peers.

    ``rows``: ``(r0, r1)``, the shard's query row blocks it covers (a slice of the shard, so
    the call reads q, dO and O in place). ``layout``: queries ``(r1 - r0) * block_size``
    against a buffer of ``kv_blocks`` key blocks. ``peers[i]``'s received blocks (``recv[p]``,
    ascending) land in buffer slots ``slots[i]``. With one peer filling the buffer in order
    (``zero_copy``) the receive tensors are the buffer.
    """

    rows: Tuple[int, int]
    layout: BlockLayout
    kv_blocks: int
    peers: Tuple[int, ...]
    slots: Tuple[Tuple[int, ...], ...]

    @property
    def zero_copy(self) -> bool:
        return len(self.peers) == 1 and self.slots[0] == tuple(range(self.kv_blocks))


@dataclass(frozen=True)
class ShardPlan:
    """What one rank computes and exchanges (built on every rank, identically, from the pattern).

    The rank's blocks fall in three parts, each one kernel call with a layout of its own:

    * ``local``: the shard's queries against the shard's own keys (``N/W`` by ``N/W`` rows,
      the tensors as given: nothing copied, nothing awaited); None if it has no block.
    * ``remote``: the shard's queries against received key blocks (:class:`RemotePart`; one
      part, or with ``window_size`` one left and one right of the shard), merged into the
      local part's output through the log-sum-exps.
    * ``hosted``: the guests' query rows (``guests_in`` in peer order, a block each) against
      the shard's own keys; their partial results go home. None if the rank hosts none.

    ``recv[p]``/``send[p]``: absolute key blocks this rank receives from / sends to rank p.
    ``guests_out[p]``: the rank's query blocks (absolute) computed on rank p against p's keys;
    ``guests_in[p]``: rank p's query blocks computed here. Each of the sequence's blocks is
    computed once, by exactly one rank.
    """

    rank: int
    world: int
    sharding: str
    shard_len: int
    block_size: int
    local: Optional[BlockLayout]
    remote: Tuple[RemotePart, ...]
    hosted: Optional[BlockLayout]
    recv: Tuple[Tuple[int, ...], ...]
    send: Tuple[Tuple[int, ...], ...]
    guests_out: Tuple[Tuple[int, ...], ...]
    guests_in: Tuple[Tuple[int, ...], ...]
    own_blocks: Tuple[int, ...]

    @property
    def blocks_received(self) -> int:
        return sum(len(r) for r in self.recv)

    @property
    def num_guests(self) -> int:
        return sum(len(g) for g in self.guests_in)

    @property
    def nnz(self) -> int:
        """Blocks this rank computes (over all heads), its three parts together."""
        return sum(lay.nnz for lay in self.layouts)

    @property
    def layouts(self) -> Tuple[BlockLayout, ...]:
        """The layouts of the rank's calls: local, remote parts, hosted (those it has)."""
        return tuple(x for x in (self.local, *(p.layout for p in self.remote), self.hosted) if x is not None)

    @property
    def kv_rows(self) -> int:
        """Key rows the rank reads: its shard and the received blocks (no copy of the shard)."""
        return self.shard_len + self.blocks_received * self.block_size

    def local_block(self, blocks) -> np.ndarray:
        """Block index within the rank's shard of its own absolute blocks (the shard's chunks
        are stacked in ascending order, so ``own_blocks`` is sorted)."""
        return np.searchsorted(np.asarray(self.own_blocks), np.asarray(blocks, dtype=np.int64))


@functools.lru_cache(maxsize=8)
def _sequence_plan(pattern: Pattern, N: int, world: int, block_size: int, causal: bool,
                   num_heads: int, window, sharding: str, guest_min_fraction: float,
                   guest_cost: Optional[float], num_kv_heads: int):
    """Every stored block of the whole sequence and who computes it: ``(head or None, I, J,
    full, table_heads, owner, executor, moved)``; ``moved`` marks blocks whose key block goes
    to the query's owner, ``executor != owner[I]`` marks guests. O(stored blocks)."""
    bs = block_size
    nb = N // bs
    head, I, J, th = _pattern_blocks(pattern, N, N, 0, 0, bs, causal, num_heads, window)
    row, J, full = _sequence_blocks(head, I, J, N, N, 0, 0, bs, causal, window)
    head = row // nb if th > 1 else None
    I = row % nb
    owner = np.empty(nb, dtype=np.int64)
    for r in range(world):
        owner[_own_blocks(N, world, r, bs, sharding)] = r
    qo, ko = owner[I], owner[J]
    cross = qo != ko
    executor = qo.copy()
    if window is None and cross.any():
        # distinct key blocks each query block reads from each other rank (over all heads)
        reads = np.unique((I[cross] * world + ko[cross]) * nb + J[cross]) // nb
        key, count = np.unique(reads, return_counts=True)
        heavy = np.isin(I * world + ko, key[count >= max(1.0, guest_min_fraction * nb / world)]) & cross
        work = np.bincount(qo, minlength=world)                   # stored blocks per rank
        for p in range(world):
            for r in range(world):
                pair = cross & (qo == p) & (ko == r)
                g = heavy & pair
                if not g.any():
                    continue
                spared = np.unique(J[pair]).size - np.unique(J[pair & ~g]).size
                moved = int(g.sum())
                if guest_cost is None or (guest_cost * num_heads * np.unique(I[g]).size < num_kv_heads * spared
                                          and work[r] + moved <= work[p]):
                    executor[g] = r
                    work[p] -= moved
                    work[r] += moved
    moved = cross & (executor == qo)
    return head, I, J, full, th, owner, executor, moved


def _by_peer(values: np.ndarray, peers: np.ndarray, world: int) -> Tuple[Tuple[int, ...], ...]:
    return tuple(tuple(np.unique(values[peers == p]).tolist()) for p in range(world))


def _call_layout(h, I, J, true_full, th, q_len, kv_len, q_pos, k_pos, bs, causal, num_heads, window):
    """The layout of one call from its blocks ``(h, I, J)`` in the call's coordinates (I, J
    count blocks from position 0, so they include ``q_pos // bs`` and ``k_pos // bs``); None
    without blocks. Raises if the call's coordinates make any block's mask differ from the
    whole sequence's (``true_full``)."""
    if I.size == 0:
        return None
    order = np.lexsort((J, I) + ((h,) if h is not None else ()))
    h = h[order] if h is not None else None
    I, J, true_full = I[order], J[order], true_full[order]
    args = (q_len, kv_len, q_pos, k_pos, bs, causal, window)
    _, _, call_full = _sequence_blocks(h, I, J, *args)
    if call_full.size != true_full.size or not (call_full == true_full).all():
        raise ValueError("distributed: a call's coordinates change the mask of some block (a "
                         "bug: report the pattern, causal and window_size)")
    return _layout_of(h, I, J, th, *args[:4], bs, causal, num_heads, window, time.perf_counter())


@functools.lru_cache(maxsize=64)
def shard_plan(pattern: Pattern, N: int, world: int, rank: int, block_size: int, causal: bool,
               num_heads: int, window=None, sharding: str = "contiguous",
               num_kv_heads: Optional[int] = None) -> ShardPlan:
    """The :class:`ShardPlan` of ``rank`` (cached); O(stored blocks of the whole sequence)
    (and O(W^2) passes over the blocks read across ranks to choose guests)."""
    bs = block_size
    head, I, J, full, th, owner, executor, moved = _sequence_plan(
        pattern, N, world, bs, causal, num_heads, window, sharding, GUEST_MIN_FRACTION, GUEST_COST,
        num_kv_heads or num_heads)
    n = N // world
    nb = n // bs
    own = _own_blocks(N, world, rank, bs, sharding)
    local = np.full(N // bs, -1, dtype=np.int64)
    local[own] = np.arange(own.size)
    qo, ko = owner[I], owner[J]
    recv = _by_peer(J[moved & (qo == rank)], ko[moved & (qo == rank)], world)
    send = _by_peer(J[moved & (ko == rank)], qo[moved & (ko == rank)], world)
    guest = executor != qo
    guests_in = _by_peer(I[guest & (executor == rank)], qo[guest & (executor == rank)], world)
    guests_out = _by_peer(I[guest & (qo == rank)], executor[guest & (qo == rank)], world)
    mine = executor == rank
    part = lambda sel: (head[sel] if head is not None else None, I[sel], J[sel], full[sel])  # noqa: E731
    common = (bs, causal, num_heads, window)

    # Local: shard rows against shard rows. A zigzag shard stacks its chunks in ascending
    # order, so a causal block between them keeps its side of the diagonal.
    h, Ib, Jb, fb = part(mine & (qo == rank) & (ko == rank))
    local_layout = _call_layout(h, local[Ib], local[Jb], fb, th, n, n, 0, 0, *common)

    # Remote: without a window every received block is full (causal: off the diagonal, which
    # is always the rank's own; non-causal: no mask), so any coordinates that keep it full
    # serve: peer after peer, packed, and under causal the queries after all the keys. With
    # a window the offsets must stay exact: one part left of the shard and one right, each
    # spanning its blocks (gaps unread).
    h, Ib, Jb, fb = part(mine & (qo == rank) & (ko != rank))
    remote = []
    if window is None:
        groups = [[p for p in range(world) if recv[p]]]
    else:   # contiguous shards only (checked by the caller): a peer lies wholly on one side
        groups = [[p for p in range(world) if recv[p] and recv[p][0] < own[0]],
                  [p for p in range(world) if recv[p] and recv[p][0] > own[-1]]]
    for side, peers in enumerate(groups):
        if not peers:
            continue
        blocks = np.concatenate([np.asarray(recv[p], dtype=np.int64) for p in peers])
        slot = np.full(N // bs, -1, dtype=np.int64)
        if window is None:
            slot[blocks] = np.arange(blocks.size)
            kvb = blocks.size
        else:
            base = int(blocks.min()) if side == 0 else int(own[-1]) + 1
            slot[blocks] = blocks - base
            kvb = (int(own[0]) if side == 0 else int(blocks.max()) + 1) - base
        sel = slot[Jb] >= 0
        rows_ = local[Ib[sel]]
        r0, r1 = int(rows_.min()), int(rows_.max()) + 1
        q_len, kv_len = (r1 - r0) * bs, kvb * bs
        if window is None:
            qb0, kb0 = (kvb if causal else 0), 0
        elif side == 0:                      # keys [base, own[0]) then the shard's rows
            qb0, kb0 = kvb + r0, 0
        else:                                # the shard's rows then keys (own[-1], ...]
            qb0, kb0 = r0, nb
        layout = _call_layout(h[sel] if h is not None else None, qb0 + rows_ - r0, kb0 + slot[Jb[sel]],
                              fb[sel], th, q_len, kv_len, qb0 * bs, kb0 * bs, *common)
        remote.append(RemotePart((r0, r1), layout, kvb, tuple(peers),
                                 tuple(tuple(slot[list(recv[p])].tolist()) for p in peers)))

    # Hosted guests: their rows against the shard's keys; every such block is full (it crosses
    # ranks, so it is off the diagonal and, with no window, unmasked or wholly visible).
    hosted = np.array([b for g in guests_in for b in g], dtype=np.int64)
    g_slot = np.full(N // bs, -1, dtype=np.int64)
    g_slot[hosted] = np.arange(hosted.size)
    h, Ib, Jb, fb = part(mine & (qo != rank))
    qb0 = nb if causal else 0
    hosted_layout = _call_layout(h, qb0 + g_slot[Ib], local[Jb], fb, th, hosted.size * bs, n,
                                 qb0 * bs, 0, *common)
    return ShardPlan(rank, world, sharding, n, bs, local_layout, tuple(remote), hosted_layout, recv, send,
                     guests_out, guests_in, tuple(own.tolist()))


# ----------------------------------------------------------------------------- exchanges
def _rows(blocks, bs: int, device) -> Tensor:
    """Token rows of block indices ``blocks``."""
    b = torch.as_tensor(np.asarray(blocks, dtype=np.int64), device=device)
    return (b[:, None] * bs + torch.arange(bs, device=device)[None, :]).reshape(-1)


def _p2p(group, messages):
    """Start point-to-point messages; ``messages`` is a list of ``(peer, tensor to send or
    None, buffer to receive into or None)``. Every rank lists its messages in the same order
    of kinds, so each send meets its receive. Returns a function that waits for all.

    Nothing waits here: on NCCL the messages run on the communicator's stream, concurrently
    with the kernels the caller launches next, and ``wait()`` only makes the current stream
    wait for them (the host does not block). The closure keeps every sent and received
    tensor alive until then, so the caching allocator cannot hand their memory to a kernel
    while a message still reads or writes it."""
    ops = []
    for p, out, into in messages:
        peer = dist.get_global_rank(group, p) if group is not None else p
        if out is not None:
            ops.append(dist.P2POp(dist.isend, out.contiguous(), peer, group))
        if into is not None:
            ops.append(dist.P2POp(dist.irecv, into, peer, group))
    works = dist.batch_isend_irecv(ops) if ops else []
    if not OVERLAP:
        for w in works:
            w.wait()
        works = []

    def wait():
        # each work is awaited once: a second wait on a gloo point-to-point work blocks
        for w in works:
            w.wait()
        works.clear()
        ops.clear()
    return wait


def _merge_math(o1: Tensor, l1: Tensor, o2: Tensor, l2: Tensor) -> Tuple[Tensor, Tensor]:
    """The merge of two partial results over disjoint keys, in fp32 (or wider): ``(o, lse)``."""
    ct = torch.promote_types(o1.dtype, torch.float32)
    l1, l2 = l1.to(ct), l2.to(ct)
    m = torch.maximum(l1, l2)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)      # rows without keys
    w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
    s = w1 + w2
    inv = torch.where(s > 0, 1 / s, torch.zeros_like(s))
    o = o1.to(ct) * (w1 * inv)[..., None] + o2.to(ct) * (w2 * inv)[..., None]
    return o, torch.where(s > 0, m + torch.log(s), torch.full_like(s, float("-inf")))


def _merge_rows(out: Tensor, lse: Tensor, start: int, o2: Tensor, l2: Tensor, backend: str) -> None:
    """Merge ``(o2, l2)`` (``(B, H, m, d)``, ``(B, H, m)``) into rows ``[start, start + m)`` of
    ``out`` and ``lse``, in place."""
    m = o2.shape[2]
    o1, l1 = out.narrow(2, start, m), lse.narrow(2, start, m)
    if backend == "triton":
        from .kernels.merge import merge_

        merge_(o1, l1, o2, l2)
        return
    o, lse_m = _merge_math(o1, l1, o2, l2)
    o1.copy_(o)
    l1.copy_(lse_m)


def _merge_into(out: Tensor, lse: Tensor, rows: Tensor, o2: Tensor, l2: Tensor) -> None:
    """Merge a partial result ``(o2, l2)`` over disjoint keys into rows ``rows`` of ``out``
    and ``lse`` (in place): the guests' pieces, a few blocks."""
    o, lse_m = _merge_math(out.index_select(2, rows), lse.index_select(2, rows), o2, l2)
    out.index_copy_(2, rows, o.to(out.dtype))
    lse.index_copy_(2, rows, lse_m.to(lse.dtype))


def _kv_buffer(part: RemotePart, arrived, bs: int):
    """The part's key and value buffers ``(B, Hkv, kv_blocks * bs, d)`` from the received
    tensors ``arrived[p] = (k_p, v_p)``: those tensors themselves when one peer fills the
    part in order, else a copy of the received blocks into their slots."""
    if part.zero_copy:
        return arrived[part.peers[0]]
    k0 = arrived[part.peers[0]][0]
    B, Hkv, _, d = k0.shape
    kb, vb = (k0.new_empty((B, Hkv, part.kv_blocks * bs, d)) for _ in range(2))
    for p, slots in zip(part.peers, part.slots):
        rows = _rows(slots, bs, k0.device)
        kb.index_copy_(2, rows, arrived[p][0])
        vb.index_copy_(2, rows, arrived[p][1])
    return kb, vb


def _part_rows(part: RemotePart, plan: ShardPlan) -> Tuple[int, int]:
    """Token rows ``(start, length)`` of the shard that a remote part's queries cover."""
    r0, r1 = part.rows
    return r0 * plan.block_size, (r1 - r0) * plan.block_size


def _empty_result(q: Tensor, backend: str) -> Tuple[Tensor, Tensor]:
    """The result of rows without keys (``out`` 0, ``lse`` -inf) in the kernels' dtypes."""
    lse_dtype = torch.float64 if q.dtype == torch.float64 and backend != "triton" else torch.float32
    B, H, n, _ = q.shape
    return torch.zeros_like(q), torch.full((B, H, n), float("-inf"), dtype=lse_dtype, device=q.device)


class _ContextParallel(torch.autograd.Function):
    """Forward: start the exchanges, compute the local part while they run, then the guests'
    rows (their partial results go home while the remote part runs), then the remote part,
    merged into the local one. Backward: the remote part first, so its dK/dV travel home
    while the local part runs; the guests' rows last (their dO arrives meanwhile)."""

    @staticmethod
    def forward(ctx, q, k, v, plan: ShardPlan, scale: float, backend: str, group):
        B, H, n, d = q.shape                                   # q (B, H, n, d); k, v (B, Hkv, n, d)
        bs, W, dev = plan.block_size, plan.world, q.device
        any_guests = plan.num_guests or any(plan.guests_out)
        # 1. guests' query rows (small) in a batch before the key blocks', so they arrive first
        guest_q = []
        msgs = []
        for p in range(W):
            out_q = q.index_select(2, _rows(plan.local_block(plan.guests_out[p]), bs, dev)) \
                if plan.guests_out[p] else None
            into = q.new_empty((B, H, len(plan.guests_in[p]) * bs, d)) if plan.guests_in[p] else None
            msgs.append((p, out_q, into))
            if into is not None:
                guest_q.append(into)
        wait_guests = _p2p(group, msgs)
        # 2. key blocks: K and V as two messages, so that a lone peer's pair is the buffer
        msgs, arrived = [], {}
        for p in range(W):
            out_k = out_v = None
            if plan.send[p]:
                rows = _rows(plan.local_block(plan.send[p]), bs, dev)
                out_k, out_v = k.index_select(2, rows), v.index_select(2, rows)
            into = None
            if plan.recv[p]:
                into = tuple(k.new_empty((B, k.shape[1], len(plan.recv[p]) * bs, d)) for _ in range(2))
                arrived[p] = into
            msgs.append((p, out_k, into and into[0]))
            msgs.append((p, out_v, into and into[1]))
        wait_kv = _p2p(group, msgs)
        # 3. the local part, on the tensors as given, while the messages travel
        if plan.local is not None:
            out, lse = _forward_impl(q, k, v, plan.local, scale, backend, None)
        else:
            out, lse = _empty_result(q, backend)
        # 4. the guests' rows; their partial results go home during the remote part
        wait_guests()
        qg = None
        wait_home, parts = None, []
        if any_guests:
            msgs = []
            if plan.hosted is not None:
                qg = torch.cat(guest_q, dim=2) if len(guest_q) > 1 else guest_q[0]   # (B, H, guests*bs, d)
                og, lg = _forward_impl(qg, k, v, plan.hosted, scale, backend, None)
            start = 0
            for p in range(W):
                send = None
                if plan.guests_in[p]:
                    m = len(plan.guests_in[p]) * bs
                    send = (og.narrow(2, start, m), lg.narrow(2, start, m))
                    start += m
                into = None
                if plan.guests_out[p]:
                    rows = _rows(plan.local_block(plan.guests_out[p]), bs, dev)
                    into = (out.new_empty((B, H, rows.numel(), d)), lse.new_empty((B, H, rows.numel())))
                    parts.append((rows, into))
                msgs.append((p, send and send[0], into and into[0]))
                msgs.append((p, send and send[1], into and into[1]))
            wait_home = _p2p(group, msgs)
        # 5. the remote part, once its keys are in
        wait_kv()
        kv_bufs = []
        for part in plan.remote:
            kb, vb = _kv_buffer(part, arrived, bs)
            start, m = _part_rows(part, plan)
            o2, l2 = _forward_impl(q.narrow(2, start, m), kb, vb, part.layout, scale, backend, None)
            _merge_rows(out, lse, start, o2, l2, backend)
            kv_bufs.append((kb, vb))
        del arrived
        if wait_home is not None:
            wait_home()
            for rows, (o2, l2) in parts:
                _merge_into(out, lse, rows, o2, l2)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.buffers = (kv_bufs, qg)
        ctx.plan, ctx.scale, ctx.backend, ctx.group = plan, scale, backend, group
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        kv_bufs, qg = ctx.buffers
        ctx.buffers = None
        plan, scale, backend, group = ctx.plan, ctx.scale, ctx.backend, ctx.group
        B, H, n, d = q.shape
        Hkv = k.shape[1]
        bs, W, dev = plan.block_size, plan.world, q.device
        if dout is None:
            dout = torch.zeros_like(out)
        any_guests = plan.num_guests or any(plan.guests_out)
        # 1. guests need dO, the final O and LSE, and dLSE of their rows (dLSE is always sent:
        # the hosts cannot know whether the owner's is None)
        wait_guests, guest_in = None, []
        if any_guests:
            msgs = []
            for p in range(W):
                send = None
                if plan.guests_out[p]:
                    rows = _rows(plan.local_block(plan.guests_out[p]), bs, dev)
                    g_dlse = dlse.index_select(2, rows) if dlse is not None else \
                        lse.new_zeros((B, H, rows.numel()))
                    send = (torch.stack([dout.index_select(2, rows).to(out.dtype), out.index_select(2, rows)]),
                            torch.stack([lse.index_select(2, rows), g_dlse.to(lse.dtype)]))
                into = None
                if plan.guests_in[p]:
                    m = len(plan.guests_in[p]) * bs
                    into = (out.new_empty((2, B, H, m, d)), lse.new_empty((2, B, H, m)))
                    guest_in.append(into)
                msgs.append((p, send and send[0], into and into[0]))
                msgs.append((p, send and send[1], into and into[1]))
            wait_guests = _p2p(group, msgs)
        # 2. the remote part: its dK/dV go home while the local part runs
        dq_parts, dkv = [], {}
        for part, (kb, vb) in zip(plan.remote, kv_bufs):
            start, m = _part_rows(part, plan)
            dq_p, dk_p, dv_p = _backward_impl(
                dout.narrow(2, start, m), q.narrow(2, start, m), kb, vb, out.narrow(2, start, m),
                lse.narrow(2, start, m), dlse.narrow(2, start, m) if dlse is not None else None,
                part.layout, scale, backend, None)
            dq_parts.append((start, dq_p))
            for p, slots in zip(part.peers, part.slots):
                if part.zero_copy:
                    dkv[p] = (dk_p, dv_p)
                else:
                    rows = _rows(slots, bs, dev)
                    dkv[p] = (dk_p.index_select(2, rows), dv_p.index_select(2, rows))
        msgs, contrib = [], []
        for p in range(W):
            into = None
            if plan.send[p]:
                into = tuple(k.new_empty((B, Hkv, len(plan.send[p]) * bs, d)) for _ in range(2))
                contrib.append((_rows(plan.local_block(plan.send[p]), bs, dev), into))
            send = dkv.get(p)
            msgs.append((p, send and send[0], into and into[0]))
            msgs.append((p, send and send[1], into and into[1]))
        wait_dkv = _p2p(group, msgs)
        # 3. the local part, on the tensors as given
        if plan.local is not None:
            dq, dk, dv = _backward_impl(dout, q, k, v, out, lse, dlse, plan.local, scale, backend, None)
        else:
            dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for start, dq_p in dq_parts:
            dq.narrow(2, start, dq_p.shape[2]).add_(dq_p)
        del dq_parts
        # 4. the guests' rows: dK/dV of the shard's keys stay, dQ goes home
        wait_dq, arrived_q = None, []
        if any_guests:
            wait_guests()
            dqg = None
            if plan.hosted is not None:
                od, ll = guest_in[0]
                if len(guest_in) > 1:               # rows: dim 3 of od, dim 3 (the last) of ll
                    od, ll = (torch.cat([t[i] for t in guest_in], dim=3) for i in (0, 1))
                # od (2, B, H, guests*bs, d): dO, O; ll (2, B, H, guests*bs): LSE, dLSE
                dqg, dkg, dvg = _backward_impl(od[0].to(q.dtype), qg, k, v, od[1], ll[0], ll[1],
                                               plan.hosted, scale, backend, None)
                dk.add_(dkg)
                dv.add_(dvg)
            msgs, start = [], 0
            for p in range(W):
                send = None
                if plan.guests_in[p]:
                    m = len(plan.guests_in[p]) * bs
                    send = dqg.narrow(2, start, m)
                    start += m
                into = None
                if plan.guests_out[p]:
                    into = dq.new_empty((B, H, len(plan.guests_out[p]) * bs, d))
                    arrived_q.append((_rows(plan.local_block(plan.guests_out[p]), bs, dev), into))
                msgs.append((p, send, into))
            wait_dq = _p2p(group, msgs)
        # 5. peers' contributions to the shard's keys and to its guests' rows
        wait_dkv()
        for rows, (dk_in, dv_in) in contrib:
            dk.index_add_(2, rows, dk_in)
            dv.index_add_(2, rows, dv_in)
        if wait_dq is not None:
            wait_dq()
            for rows, buf in arrived_q:
                dq.index_add_(2, rows, buf)
        return dq, dk, dv, None, None, None, None


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, *, group=None,
                     block_size: int = 128, causal: bool = False, scale: Optional[float] = None,
                     window_size: Optional[Tuple[int, int]] = None, return_lse: bool = False,
                     backend: str = "auto", sharding: str = "contiguous"):
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

    Returns the rank's shard of the output ``(batch, num_heads, N/W, head_dim)`` (and its LSE),
    in the shard's order. The shard length must be a multiple of ``block_size`` (of
    ``2 * block_size`` for zigzag: a block lives on one rank). Packed documents and
    key-padding masks are not supported across shards.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t)
    if not isinstance(pattern, Pattern):
        raise TypeError(f"pattern must be a sparseflash Pattern, got {type(pattern).__name__}")
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("group: torch.distributed is not initialised (call init_process_group first)")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool, got {causal!r}")
    if sharding not in SHARDINGS:
        raise ValueError(f"sharding must be one of {SHARDINGS}, got {sharding!r}")
    _check_block_size(block_size)
    window = check_window(window_size)
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
    backend = _resolve_backend(backend, q)
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    plan = shard_plan(pattern, n * world, world, rank, block_size, causal, H, window, sharding, k.shape[1])
    out, lse = _ContextParallel.apply(q, k, v, plan, scale, backend, group)
    return (out, lse) if return_lse else out
