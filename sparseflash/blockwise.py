"""The ``backend="torch"`` implementation: blockwise attention in PyTorch over a layout's tables.

It walks the forward CSR table of the Triton kernels one query block at a time, gathering only
that block's rows and its keys' rows (rows first, then heads: never a whole head; views where
the rows are contiguous), so time and memory grow with the number of stored blocks, never
N x N. The backward makes the same walk once: each query block's scores are recomputed once
and give its dQ rows and its keys' dK/dV contributions. Every block is masked token by token
with the rule of :class:`~sparseflash.BlockLayout` (lengths, causal line, window, padding),
so it also accepts tables that list more blocks than the call needs (a layout compiled for a
longer sequence, as decoding uses). It computes in fp32 for half inputs and in the input
dtype otherwise.

Shapes everywhere: ``q (B, Hq, N, d)``, ``k, v (B, Hkv, Nk, d)``, ``lse (B, Hq, N)``;
query head ``h`` reads kv head ``h // (Hq // Hkv)``.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import torch

from .layout import (BlockLayout, COL_OFF, K_LEN, K_POS, K_START, NK, NQ, Q_LEN, Q_POS,
                     Q_START, ROW_OFF)
from .philox import dropout_scale

__all__ = ["blockwise_forward", "blockwise_backward"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _Seq:
    """One table sequence of a call: its batch elements and the geometry the loops use
    (positions ``[q_lo, q_hi)`` / ``[k_lo, k_hi)``, first absolute blocks, tensor row of
    position 0, table offsets and sizes)."""

    __slots__ = ("bsel", "q_lo", "q_hi", "k_lo", "k_hi", "i0", "j0", "q_row0", "k_row0",
                 "row_off", "col_off", "nq", "nk")

    def __init__(self, bsel: slice, geo: List[int], bs: int):
        self.bsel = bsel
        self.q_lo, self.q_hi = geo[Q_POS], geo[Q_POS] + geo[Q_LEN]
        self.k_lo, self.k_hi = geo[K_POS], geo[K_POS] + geo[K_LEN]
        self.i0, self.j0 = self.q_lo // bs, self.k_lo // bs
        self.q_row0, self.k_row0 = geo[Q_START] - self.q_lo, geo[K_START] - self.k_lo
        self.row_off, self.col_off, self.nq, self.nk = geo[ROW_OFF], geo[COL_OFF], geo[NQ], geo[NK]


def _slots(layout: BlockLayout, batch: int) -> Iterator[_Seq]:
    """Each table sequence with the batch elements it serves."""
    for s in range(layout.num_seqs):
        geo = [int(x) for x in layout.seqs[s]]
        if layout.num_seqs == 1 and not layout.packed:
            bsel = slice(0, batch)                      # one table shared by the batch
        else:
            b = 0 if layout.packed else s
            bsel = slice(b, b + 1)
        yield _Seq(bsel, geo, layout.block_size)


def _head_groups(num_heads: int, table_heads: int) -> List[List[int]]:
    """Query heads served by each table head: all of them for a shared table."""
    return [[h] for h in range(num_heads)] if table_heads > 1 else [list(range(num_heads))]


def _ranges(blocks: List[int], first_block: int, lo: int, hi: int, bs: int) -> List[Tuple[int, int]]:
    """The absolute positions in [lo, hi) that local blocks ``blocks`` cover, as ascending,
    non-empty ``(start, stop)`` ranges with neighbouring blocks merged (host ints: no
    device sync on a GPU)."""
    out: List[Tuple[int, int]] = []
    for b in sorted(blocks):
        start, stop = max((b + first_block) * bs, lo), min((b + first_block + 1) * bs, hi)
        if start >= stop:
            continue
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


def _positions(ranges: List[Tuple[int, int]], device) -> torch.Tensor:
    return torch.cat([torch.arange(a, b, device=device) for a, b in ranges])


def _index(ranges: List[Tuple[int, int]], positions: torch.Tensor, offset: int):
    """The tensor rows ``positions + offset`` as an index along a tensor's row axis: a slice
    when they are one range (a view, no copy: one query block, or a run of neighbouring key
    blocks), else an index tensor."""
    if len(ranges) == 1:
        return slice(ranges[0][0] + offset, ranges[0][1] + offset)
    return positions + offset


class _Mods:
    """Score modifiers and dropout of one call: ``scores(s, t, u, bsel, heads)`` turns the
    scaled products ``s = (scale q) k^T`` into the scores (softcap, ALiBi) and gives
    d(capped)/d(raw); ``keep(...)`` dropout's mask."""

    def __init__(self, softcap, alibi, dropout_p, rng, num_heads):
        self.softcap, self.alibi = softcap, alibi
        self.dropout_p, self.rng, self.num_heads = dropout_p, rng, num_heads

    def scores(self, s, t, u, bsel, heads):
        dcap = None
        if self.softcap > 0:
            th = torch.tanh(s / self.softcap)
            s, dcap = self.softcap * th, 1.0 - th * th
        if self.alibi is not None:
            slopes = self.alibi[heads] if self.alibi.dim() == 1 else self.alibi[bsel][:, heads]
            slopes = slopes.reshape(-1 if self.alibi.dim() == 2 else 1, len(heads), 1, 1).to(s.dtype)
            s = s - slopes * (t[:, None] - u[None, :]).abs().to(s.dtype)
        return s, dcap

    def keep(self, bsel, heads, rows, u, batch, t):
        """Bool ``[b, h, len(rows), len(u)]`` for query tensor rows (at query positions ``t``)
        and key positions ``u`` (None without dropout)."""
        if self.dropout_p == 0:
            return None
        from .philox import dropout_keep

        b = torch.arange(batch, device=rows.device)[bsel]
        bh = b[:, None] * self.num_heads + torch.tensor(heads, device=rows.device)[None, :]
        return dropout_keep(self.rng[0], self.rng[1], bh[:, :, None, None], rows, u, self.dropout_p,
                            positions=t)


class _Rule:
    """The token rule of one sequence: which (query position, key position) pairs pass."""

    def __init__(self, layout: BlockLayout, seq: _Seq, kpm: Optional[torch.Tensor]):
        self.causal, self.window = layout.causal, layout.window
        self.k_row0 = seq.k_row0
        self.kpm = None if kpm is None else kpm[seq.bsel]             # [b, Nk] bool

    def passes_all(self, t_first: int, t_last: int, u_first: int, u_last: int) -> bool:
        """Whether every pair of queries in [t_first, t_last] and keys in [u_first, u_last]
        passes (decided on the host from the extremes; padding is data, so never)."""
        if self.kpm is not None:
            return False
        if self.causal and u_last > t_first:
            return False
        if self.window is not None:
            left, right = self.window
            if left >= 0 and u_first < t_last - left:
                return False
            if right >= 0 and u_last > t_first + right:
                return False
        return True

    def apply(self, s: torch.Tensor, row: "_BlockRow") -> torch.Tensor:
        """``s`` (``[b, h, Lq, Lk]``) of block row ``row`` with the pairs that fail set to
        -inf, in place; untouched when every pair passes (full blocks, no padding)."""
        if not self.passes_all(row.t_first, row.t_last, row.u_first, row.u_last):
            s.masked_fill_(~self.mask(row.t, row.u), float("-inf"))
        return s

    def mask(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``[b or 1, 1, len(t), len(u)]`` bool."""
        m = torch.ones(t.numel(), u.numel(), dtype=torch.bool, device=t.device)
        if self.causal:
            m &= u[None, :] <= t[:, None]
        if self.window is not None:
            left, right = self.window
            if left >= 0:
                m &= u[None, :] >= t[:, None] - left
            if right >= 0:
                m &= u[None, :] <= t[:, None] + right
        m = m[None, None]
        if self.kpm is not None:
            m = m & self.kpm[:, u + self.k_row0][:, None, None, :]
        return m


def _gather(x: torch.Tensor, bsel: slice, rows, heads: Optional[torch.Tensor]) -> torch.Tensor:
    """``x[bsel]``'s ``rows`` (a slice or an index, along dim 2) of heads ``heads`` (None: all,
    in order). Rows first, then heads: never a copy of a whole head; a view where both are
    slices."""
    x = x[bsel][:, :, rows]
    return x if heads is None else x[:, heads]


def _head_index(heads: List[int], num_heads: int, group: int, device):
    """The query heads' index and their kv heads' index for :func:`_gather` (None where it is
    every head in order)."""
    every = heads == list(range(num_heads))
    hs = torch.tensor(heads, device=device)
    return (None if every else hs), (None if every and group == 1 else hs // group)


def _add_rows(acc: torch.Tensor, part: torch.Tensor, bsel: slice, cols, heads: List[int], group: int,
              per_head: bool) -> None:
    """Add ``part`` (``[b, len(heads), L, d]``, query heads ``heads``) to the kv-head
    accumulator ``acc`` (``[B, Hkv, Nk, d]``) at rows ``cols``, summing each GQA group's heads."""
    if per_head:                                   # one query head: its kv head
        target, part = acc[bsel, heads[0] // group], part[:, 0]                 # [b, Nk, d]
        dim = 1
    else:                                          # every head: sum each group
        target, part = acc[bsel], part.view(part.shape[0], acc.shape[1], group, -1, part.shape[-1]).sum(2)
        dim = 2
    if isinstance(cols, slice):
        target.narrow(dim, cols.start, cols.stop - cols.start).add_(part)
    else:
        target.index_add_(dim, cols, part)


class _BlockRow:
    """One query block of the walk: its batch elements ``bsel``, query heads ``heads`` (and
    their :func:`_head_index` ``qh``, ``kh``), token rule, query and key positions ``t``,
    ``u`` (ascending; their extremes ``t_first`` ... ``u_last`` as host ints) and their tensor
    rows ``rows``, ``cols`` (slices where contiguous), and the query tensor rows as a tensor,
    ``q_rows`` (dropout's draws)."""

    __slots__ = ("bsel", "heads", "qh", "kh", "rule", "t", "u", "rows", "cols", "q_rows",
                 "t_first", "t_last", "u_first", "u_last")


def _block_rows(layout: BlockLayout, batch: int, num_heads: int, group: int,
                kpm: Optional[torch.Tensor], device) -> Iterator[_BlockRow]:
    """Every query block of the forward table that sees at least one key, sequence by
    sequence and table head by table head."""
    ptr, idx = layout.fwd_ptr.tolist(), layout.fwd_idx.tolist()
    bs = layout.block_size
    for seq in _slots(layout, batch):
        rule = _Rule(layout, seq, kpm)
        for th, heads in enumerate(_head_groups(num_heads, layout.table_heads)):
            qh, kh = _head_index(heads, num_heads, group, device)
            for i in range(seq.nq):
                r = seq.row_off + th * seq.nq + i
                u_ranges = _ranges(idx[ptr[r]:ptr[r + 1]], seq.j0, seq.k_lo, seq.k_hi, bs)
                t_ranges = _ranges([i], seq.i0, seq.q_lo, seq.q_hi, bs)
                if not u_ranges or not t_ranges:
                    continue
                row = _BlockRow()
                row.bsel, row.heads, row.qh, row.kh, row.rule = seq.bsel, heads, qh, kh, rule
                row.t, row.u = _positions(t_ranges, device), _positions(u_ranges, device)
                row.t_first, row.t_last = t_ranges[0][0], t_ranges[-1][1] - 1
                row.u_first, row.u_last = u_ranges[0][0], u_ranges[-1][1] - 1
                row.q_rows = row.t + seq.q_row0
                row.rows = _index(t_ranges, row.t, seq.q_row0)
                row.cols = _index(u_ranges, row.u, seq.k_row0)
                yield row


def _no_autocast(fn):
    """Run in the inputs' dtypes: under autocast the block products would come back in the
    autocast dtype and no longer fit the output buffers."""
    import functools

    @functools.wraps(fn)
    def wrapper(q, *args, **kwargs):
        with torch.autocast(device_type=q.device.type, enabled=False):
            return fn(q, *args, **kwargs)
    return wrapper


@_no_autocast
def blockwise_forward(q, k, v, layout: BlockLayout, *, scale: float,
                      key_padding_mask: Optional[torch.Tensor] = None, softcap: float = 0.0,
                      alibi_slopes: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                      rng: Tuple[int, int] = (0, 0)) -> Tuple[torch.Tensor, torch.Tensor]:
    """Forward over the CSR rows; returns ``out`` (q's dtype) and ``lse`` (fp32; float64 for
    float64 inputs, so that gradcheck's finite differences see it). Dropout draws the same
    Philox bits as the Triton kernels (:mod:`sparseflash.philox`)."""
    B, H, N, d = q.shape
    Hkv = k.shape[1]
    group = H // Hkv
    ct = _compute_dtype(q.dtype)
    mods = _Mods(softcap, alibi_slopes, dropout_p, rng, H)
    out = torch.zeros((B, H, N, d), dtype=ct, device=q.device)
    lse = torch.full((B, H, N), float("-inf"), dtype=ct, device=q.device)
    for r in _block_rows(layout, B, H, group, key_padding_mask, q.device):
        qi = _gather(q, r.bsel, r.rows, r.qh).to(ct) * scale           # [b, h, Lq, d]
        kj = _gather(k, r.bsel, r.cols, r.kh).to(ct)                   # [b, h, Lk, d]
        vj = _gather(v, r.bsel, r.cols, r.kh).to(ct)
        s, _ = mods.scores(qi @ kj.transpose(-1, -2), r.t, r.u, r.bsel, r.heads)
        s = r.rule.apply(s, r)
        m = s.amax(-1, keepdim=True)
        m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        p = s.sub_(m).exp_()                                              # in place: s is ours
        l = p.sum(-1, keepdim=True)
        l_safe = torch.where(l == 0, torch.ones_like(l), l)
        keep = mods.keep(r.bsel, r.heads, r.q_rows, r.u, B, r.t)
        if keep is not None:
            p = torch.where(keep, p * dropout_scale(dropout_p), torch.zeros_like(p))
        out[r.bsel, r.heads, r.rows] = (p @ vj) / l_safe
        lse[r.bsel, r.heads, r.rows] = torch.where(
            l == 0, torch.full_like(l, float("-inf")), m + torch.log(l_safe))[..., 0]
    return out.to(q.dtype), lse.to(torch.float64 if q.dtype == torch.float64 else torch.float32)


@_no_autocast
def blockwise_backward(do, q, k, v, out, lse, layout: BlockLayout, *, scale: float,
                       dlse: Optional[torch.Tensor] = None,
                       key_padding_mask: Optional[torch.Tensor] = None, softcap: float = 0.0,
                       alibi_slopes: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                       rng: Tuple[int, int] = (0, 0)):
    """Backward in one walk over the forward table's rows: each query block's scores are
    recomputed once and give its dQ rows and its keys' dK/dV contributions, added at their
    rows (each row's keys are distinct, so the adds never collide)."""
    B, H, N, d = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    group = H // Hkv
    ct = _compute_dtype(q.dtype)
    delta = (do.to(ct) * out.to(ct)).sum(-1)                          # [B, H, N]
    if dlse is not None:
        delta = delta - dlse.to(ct)
    # probabilities are exp(s - lse); rows without keys (lse = -inf) get +inf, so p = 0
    lse_c = lse.to(ct)
    lse_c = torch.where(torch.isinf(lse_c), torch.full_like(lse_c, float("inf")), lse_c)
    dq = torch.zeros((B, H, N, d), dtype=ct, device=q.device)
    dk = torch.zeros((B, Hkv, Nk, d), dtype=ct, device=q.device)
    dv = torch.zeros((B, Hkv, Nk, d), dtype=ct, device=q.device)
    if B == 0:
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
    mods = _Mods(softcap, alibi_slopes, dropout_p, rng, H)
    per_head = layout.table_heads > 1
    for r in _block_rows(layout, B, H, group, key_padding_mask, q.device):
        qi = _gather(q, r.bsel, r.rows, r.qh).to(ct)                   # [b, h, Lq, d]
        doi = _gather(do, r.bsel, r.rows, r.qh).to(ct)
        kj = _gather(k, r.bsel, r.cols, r.kh).to(ct)                   # [b, h, Lk, d]
        vj = _gather(v, r.bsel, r.cols, r.kh).to(ct)
        s, dcap = mods.scores((qi * scale) @ kj.transpose(-1, -2), r.t, r.u, r.bsel, r.heads)
        s = r.rule.apply(s, r)
        p = s.sub_(_gather(lse_c, r.bsel, r.rows, r.qh)[..., None]).exp_()
        dp = doi @ vj.transpose(-1, -2)
        keep = mods.keep(r.bsel, r.heads, r.q_rows, r.u, B, r.t)
        p_v = p                                                           # what multiplies V
        if keep is not None:
            scale_drop = dropout_scale(dropout_p)
            p_v = torch.where(keep, p * scale_drop, torch.zeros_like(p))
            dp = torch.where(keep, dp * scale_drop, torch.zeros_like(dp))
        dv_j = p_v.transpose(-1, -2) @ doi                                # [b, h, Lk, d]
        ds = p.mul_(dp.sub_(_gather(delta, r.bsel, r.rows, r.qh)[..., None]))   # p is spent
        if dcap is not None:
            ds = ds.mul_(dcap)
        dq[r.bsel, r.heads, r.rows] = (ds @ kj) * scale
        dk_j = (ds.transpose(-1, -2) @ qi) * scale
        _add_rows(dk, dk_j, r.bsel, r.cols, r.heads, group, per_head)
        _add_rows(dv, dv_j, r.bsel, r.cols, r.heads, group, per_head)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
