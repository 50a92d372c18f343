"""Decode kernels: a few queries against a long key cache, split over programs (split-KV).

A decode step has one query row (or a few: speculative decoding, small chunks) per head,
so one program per query tile would leave the GPU idle and run a long row on one SM. Here
the query rows of one kv head (the GQA group, times the step's queries) form one tile of
``BLOCK_M`` rows, and the row's table entries are split over ``num_splits`` programs; each
writes its part's normalised output and log-sum-exp, and ``_decode_combine_kernel`` merges
the parts through their log-sum-exps.

Every tile is masked token by token (key present, causal, window, padding): a decode step is
bandwidth-bound, so masking is free, and the table may list blocks past the cache's end (the
rows of a layout compiled for a longer sequence), which are masked off without being read.
All queries of a step lie in one absolute query block, whose table row ``table_row`` is
walked; positions follow :class:`sparseflash.BlockLayout` (keys at 0..kv_len-1, query i at
``q_pos + i``).
"""
import triton
import triton.language as tl

from .tiles import LN2, _dot, _load_tile, _visible


@triton.jit(do_not_specialize=["kv_len", "q_pos", "table_row"])
def _decode_split_kernel(Q, K, V, OP, fwd_ptr, fwd_idx, KPM, kv_len, q_pos, table_row,
                         lp_offset, stride_qb, stride_qh, stride_qm, stride_qd,
                         stride_kb, stride_kh, stride_kn, stride_kd,
                         stride_vb, stride_vh, stride_vn, stride_vd,
                         stride_kpm_b, num_heads, group_size, num_q, table_nq, table_heads_gt1,
                         window_left, window_right, qk_scale, num_splits,
                         BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                         CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
                         HAS_KPM: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # program: (split, batch * head pack); a head pack is HEADS query heads of one kv head
    SUB: tl.constexpr = BLOCK // BLOCK_N
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    split = tl.program_id(0)
    packs = num_heads // HEADS
    off_b = tl.program_id(1) // packs
    h0 = (tl.program_id(1) % packs) * HEADS
    off_kvh = h0 // group_size

    offs_m = tl.arange(0, BLOCK_M)                   # tile row m: head h0 + m // num_q, query m % num_q
    row_ok = offs_m < HEADS * num_q
    q_idx = offs_m % num_q
    heads = h0 + offs_m // num_q
    rows_pos = q_pos + q_idx                         # absolute positions
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + off_b.to(tl.int64) * stride_qb + heads[:, None].to(tl.int64) * stride_qh \
        + q_idx[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = _load_tile(q_ptrs, row_ok, d_ok, True, PAD_D)                 # [BLOCK_M, D]

    row = table_row + h0 * table_heads_gt1 * table_nq
    lo = tl.load(fwd_ptr + row)
    hi = tl.load(fwd_ptr + row + 1)
    chunk = tl.cdiv(hi - lo, num_splits)
    e_lo = tl.minimum(lo + split * chunk, hi)
    e_hi = tl.minimum(e_lo + chunk, hi)

    K_head = K + off_b.to(tl.int64) * stride_kb + off_kvh.to(tl.int64) * stride_kh
    V_head = V + off_b.to(tl.int64) * stride_vb + off_kvh.to(tl.int64) * stride_vh
    kpm_row = off_b.to(tl.int64) * stride_kpm_b
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)
    for it in range(e_lo * SUB, e_hi * SUB):
        kv_block_idx = tl.load(fwd_idx + it // SUB)
        start_n = kv_block_idx * BLOCK + (it % SUB) * BLOCK_N
        cols_pos = start_n + offs_n
        col_ok = cols_pos < kv_len
        if HAS_KPM:
            keep = tl.load(KPM + kpm_row + cols_pos, mask=col_ok, other=0)
            col_ok = col_ok & (keep != 0)
        kT = _load_tile(K_head + start_n.to(tl.int64) * stride_kn + offs_n[None, :] * stride_kn
                        + offs_d[:, None] * stride_kd, d_ok, col_ok, PAD_D, True)   # [D, BLOCK_N]
        qk = _dot(q, kT, None, UPCAST, PRECISION)
        visible = _visible(rows_pos, cols_pos, row_ok, col_ok, window_left, window_right,
                           CAUSAL, HAS_WL, HAS_WR)
        qk = tl.where(visible, qk * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(V_head + start_n.to(tl.int64) * stride_vn + offs_n[:, None] * stride_vn
                       + offs_d[None, :] * stride_vd, col_ok, d_ok, True, PAD_D)     # [BLOCK_N, D]
        acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], UPCAST, PRECISION)
        m_i = m_new

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    # parts: OP (B, H, num_q, num_splits, D) fp32, then LP (B, H, num_q, num_splits) natural log
    LP = OP + lp_offset
    part = ((off_b * num_heads + heads).to(tl.int64) * num_q + q_idx) * num_splits + split
    tl.store(OP + part[:, None] * HEAD_DIM + offs_d[None, :], acc / l_safe[:, None],
             mask=row_ok[:, None] & d_ok[None, :])
    tl.store(LP + part, tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * LN2), mask=row_ok)


@triton.jit
def _decode_combine_kernel(OP, Out, LSE, lp_offset, num_splits,
                           HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                           SPLITS_PAD: tl.constexpr):
    """One program per (batch, head, query): ``out = sum_s w_s o_s / sum_s w_s`` with
    ``w_s = exp(lse_s - max lse)``; rows no part saw give out 0 and lse -inf."""
    r = tl.program_id(0).to(tl.int64)               # (b * H + h) * num_q + q: Out/LSE row
    LP = OP + lp_offset
    offs_s = tl.arange(0, SPLITS_PAD)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    s_ok = offs_s < num_splits
    lse = tl.load(LP + r * num_splits + offs_s, mask=s_ok, other=float("-inf"))
    m = tl.max(lse, 0)
    m_use = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp(lse - m_use)                          # 0 for empty parts
    o = tl.load(OP + (r * num_splits + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
                mask=s_ok[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    total = tl.sum(w, 0)
    empty = total == 0.0
    out = tl.sum(o * w[:, None], 0) / tl.where(empty, 1.0, total)
    tl.store(Out + r * HEAD_DIM + offs_d, out.to(Out.dtype.element_ty), mask=offs_d < HEAD_DIM)
    tl.store(LSE + r, tl.where(empty, float("-inf"), m_use + tl.log(tl.where(empty, 1.0, total))))
