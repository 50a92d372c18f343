"""Backward block-sparse FlashAttention kernels (pure ``@triton.jit`` code).

Two kernels, launched in this order; nothing N x N is stored, each block's probabilities
are recomputed from the forward's log-sum-exp:

* ``_bwd_dq_kernel``: one program per (query tile, batch * head), walking the forward row.
  Before its loop it computes, for its own rows, ``delta = rowsum(dO * O)`` (minus the
  gradient ``dlse`` of the returned log-sum-exp, which then folds into
  ``dS = P * (dP - delta)``) and ``lse2 = lse * log2(e)`` (0 for rows with no key, whose
  probabilities are then 0 everywhere), and stores both for the next kernel. This replaces
  a separate preprocess launch that read O and dO once more (benchmarks/NOTES.md, run 15).
* ``_bwd_dkdv_kernel``: one program per (key tile, batch * kv head). It walks the
  transposed (``bwd_*``) CSR row of its key block, reading ``delta``/``lse2`` of each query
  block it meets; for GQA it loops over the query heads of the group inside the program,
  so dK/dV are written once, with no atomics, in a fixed order: deterministic.
"""
import triton
import triton.language as tl

from .fwd import _block_at, _dot, _head_base, _load_rows, _load_tile, _program_tile


@triton.jit
def _dkdv_inner(dk, dv, k, v, Q_head, DO_head, LSE2_head, Delta_head, off_b, off_h,
                idx_ptr, it_lo, it_hi,
                offs_n, offs_m, offs_d,
                stride_qm, stride_qd, stride_dom, stride_dod,
                qk_scale, seq_len, kv_len,
                BLOCK: tl.constexpr, BLOCK_M: tl.constexpr,
                HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                UPCAST: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr):
    SUB: tl.constexpr = BLOCK // BLOCK_M
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    d_ok = offs_d < HEAD_DIM
    next_idx = _block_at(idx_ptr, it_lo, it_hi, SUB)
    for it in range(it_lo, it_hi):
        q_block_idx = next_idx
        next_idx = _block_at(idx_ptr, it + 1, it_hi, SUB)
        start_m = q_block_idx * BLOCK + (it % SUB) * BLOCK_M
        rows = start_m + offs_m                                   # [BLOCK_M]
        row_ok = rows < seq_len
        qT = _load_rows(Q_head, off_b, off_h, start_m, offs_m, offs_d, row_ok, d_ok,
                        stride_qm, stride_qd, BLOCK_M, HEAD_DIM_PAD, MASKED, PAD_D,
                        True, USE_TMA)                            # [D, BLOCK_M]
        if MASKED:
            lse2 = tl.load(LSE2_head + rows, mask=row_ok, other=0.0)
        else:
            lse2 = tl.load(LSE2_head + rows)
        qkT = _dot(k, qT, None, UPCAST, PRECISION)               # [BLOCK_N, BLOCK_M]
        pT = tl.math.exp2(qkT * qk_scale - lse2[None, :])
        if MASKED:
            visible = row_ok[None, :] & (offs_n < kv_len)[:, None]
            if CAUSAL:
                visible = visible & (offs_n[:, None] <= rows[None, :] + (kv_len - seq_len))
            pT = tl.where(visible, pT, 0.0)
        do = _load_rows(DO_head, off_b, off_h, start_m, offs_m, offs_d, row_ok, d_ok,
                        stride_dom, stride_dod, BLOCK_M, HEAD_DIM_PAD, MASKED, PAD_D,
                        False, USE_TMA)                           # [BLOCK_M, D]
        dv = _dot(pT.to(do.dtype), do, dv, UPCAST, PRECISION)
        dpT = _dot(v, tl.trans(do), None, UPCAST, PRECISION)     # [BLOCK_N, BLOCK_M]
        if MASKED:
            delta = tl.load(Delta_head + rows, mask=row_ok, other=0.0)
        else:
            delta = tl.load(Delta_head + rows)
        dsT = pT * (dpT - delta[None, :])
        dk = _dot(dsT.to(qT.dtype), tl.trans(qT), dk, UPCAST, PRECISION)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE2, Delta, DK, DV,
                     bwd_ptr, bwd_idx, bwd_nfull, schedule, num_n_tiles,
                     stride_qb, stride_qh, stride_qm, stride_qd,
                     stride_kb, stride_kh, stride_kn, stride_kd,
                     stride_vb, stride_vh, stride_vn, stride_vd,
                     stride_dob, stride_doh, stride_dom, stride_dod,
                     stride_dkb, stride_dkh, stride_dkn, stride_dkd,
                     stride_dvb, stride_dvh, stride_dvn, stride_dvd,
                     num_heads, num_kv_heads, seq_len, kv_len, table_row_stride,
                     sm_scale, qk_scale,
                     BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     GROUP_SIZE: tl.constexpr,
                     HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                     CAUSAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                     USE_TMA: tl.constexpr, SCHEDULED: tl.constexpr):
    tl.static_assert(BLOCK % BLOCK_M == 0)
    tl.static_assert(BLOCK % BLOCK_N == 0)
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    SUB: tl.constexpr = BLOCK // BLOCK_M
    pid_n, pid_bkv = _program_tile(schedule, num_n_tiles, False, SCHEDULED)
    off_b = pid_bkv // num_kv_heads
    off_kvh = pid_bkv % num_kv_heads

    start_n = pid_n * BLOCK_N
    kv_block_idx = start_n // BLOCK
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    col_ok = offs_n < kv_len
    d_ok = offs_d < HEAD_DIM

    k_ptrs = K + off_b.to(tl.int64) * stride_kb + off_kvh.to(tl.int64) * stride_kh \
        + start_n.to(tl.int64) * stride_kn \
        + tl.arange(0, BLOCK_N)[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + off_b.to(tl.int64) * stride_vb + off_kvh.to(tl.int64) * stride_vh \
        + start_n.to(tl.int64) * stride_vn \
        + tl.arange(0, BLOCK_N)[:, None] * stride_vn + offs_d[None, :] * stride_vd
    k = _load_tile(k_ptrs, col_ok, d_ok, True, PAD_D)              # [BLOCK_N, D]
    v = _load_tile(v_ptrs, col_ok, d_ok, True, PAD_D)
    dk = tl.zeros([BLOCK_N, HEAD_DIM_PAD], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM_PAD], tl.float32)

    # the query heads sharing this kv head, in a fixed order (deterministic, no atomics)
    for g in range(GROUP_SIZE):
        off_h = off_kvh * GROUP_SIZE + g
        row = off_h * table_row_stride + kv_block_idx     # table_row_stride = nk (per-head) or 0
        lo = tl.load(bwd_ptr + row)
        hi = tl.load(bwd_ptr + row + 1)
        n_full = tl.load(bwd_nfull + row)
        bh = off_b * num_heads + off_h
        Q_head = _head_base(Q, off_b, off_h, stride_qb, stride_qh, USE_TMA)
        DO_head = _head_base(DO, off_b, off_h, stride_dob, stride_doh, USE_TMA)
        LSE2_head = LSE2 + bh.to(tl.int64) * seq_len
        Delta_head = Delta + bh.to(tl.int64) * seq_len
        dk, dv = _dkdv_inner(dk, dv, k, v, Q_head, DO_head, LSE2_head, Delta_head, off_b, off_h, bwd_idx,
                             lo * SUB, (lo + n_full) * SUB, offs_n, offs_m, offs_d,
                             stride_qm, stride_qd, stride_dom, stride_dod,
                             qk_scale, seq_len, kv_len,
                             BLOCK, BLOCK_M, HEAD_DIM, HEAD_DIM_PAD,
                             False, CAUSAL, UPCAST, PRECISION, USE_TMA)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q_head, DO_head, LSE2_head, Delta_head, off_b, off_h, bwd_idx,
                             (lo + n_full) * SUB, hi * SUB, offs_n, offs_m, offs_d,
                             stride_qm, stride_qd, stride_dom, stride_dod,
                             qk_scale, seq_len, kv_len,
                             BLOCK, BLOCK_M, HEAD_DIM, HEAD_DIM_PAD,
                             True, CAUSAL, UPCAST, PRECISION, USE_TMA)

    dk = dk * sm_scale
    out_mask = col_ok[:, None] & d_ok[None, :]
    dk_ptrs = DK + off_b.to(tl.int64) * stride_dkb + off_kvh.to(tl.int64) * stride_dkh \
        + start_n.to(tl.int64) * stride_dkn \
        + tl.arange(0, BLOCK_N)[:, None] * stride_dkn + offs_d[None, :] * stride_dkd
    dv_ptrs = DV + off_b.to(tl.int64) * stride_dvb + off_kvh.to(tl.int64) * stride_dvh \
        + start_n.to(tl.int64) * stride_dvn \
        + tl.arange(0, BLOCK_N)[:, None] * stride_dvn + offs_d[None, :] * stride_dvd
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=out_mask)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=out_mask)


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, K_head, V_head, off_b, off_kvh, idx_ptr, it_lo, it_hi,
              offs_m, offs_n, offs_d,
              stride_kn, stride_kd, stride_vn, stride_vd,
              qk_scale, seq_len, kv_len,
              BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
              HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr,
              UPCAST: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr):
    SUB: tl.constexpr = BLOCK // BLOCK_N
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    d_ok = offs_d < HEAD_DIM
    next_idx = _block_at(idx_ptr, it_lo, it_hi, SUB)
    for it in range(it_lo, it_hi):
        kv_block_idx = next_idx
        next_idx = _block_at(idx_ptr, it + 1, it_hi, SUB)
        start_n = kv_block_idx * BLOCK + (it % SUB) * BLOCK_N
        cols = start_n + offs_n
        col_ok = cols < kv_len
        kT = _load_rows(K_head, off_b, off_kvh, start_n, offs_n, offs_d, col_ok, d_ok,
                        stride_kn, stride_kd, BLOCK_N, HEAD_DIM_PAD, MASKED, PAD_D,
                        True, USE_TMA)                            # [D, BLOCK_N]
        vT = _load_rows(V_head, off_b, off_kvh, start_n, offs_n, offs_d, col_ok, d_ok,
                        stride_vn, stride_vd, BLOCK_N, HEAD_DIM_PAD, MASKED, PAD_D,
                        True, USE_TMA)
        qk = _dot(q, kT, None, UPCAST, PRECISION)                 # [BLOCK_M, BLOCK_N]
        p = tl.math.exp2(qk * qk_scale - lse2[:, None])
        if MASKED:
            visible = (offs_m < seq_len)[:, None] & col_ok[None, :]
            if CAUSAL:
                visible = visible & (cols[None, :] <= offs_m[:, None] + (kv_len - seq_len))
            p = tl.where(visible, p, 0.0)
        dp = _dot(do, vT, None, UPCAST, PRECISION)
        ds = p * (dp - delta[:, None])
        dq = _dot(ds.to(kT.dtype), tl.trans(kT), dq, UPCAST, PRECISION)
    return dq


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, Out, LSE, DLSE, LSE2, Delta, DQ,
                   fwd_ptr, fwd_idx, fwd_nfull, schedule, num_m_tiles,
                   stride_qb, stride_qh, stride_qm, stride_qd,
                   stride_kb, stride_kh, stride_kn, stride_kd,
                   stride_vb, stride_vh, stride_vn, stride_vd,
                   stride_dob, stride_doh, stride_dom, stride_dod,
                   stride_ob, stride_oh, stride_om, stride_od,
                   stride_dqb, stride_dqh, stride_dqm, stride_dqd,
                   num_heads, group_size, seq_len, kv_len, table_row_stride,
                   sm_scale, qk_scale,
                   BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                   CAUSAL: tl.constexpr, REVERSE_M: tl.constexpr,
                   UPCAST: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
                   SCHEDULED: tl.constexpr, HAS_DLSE: tl.constexpr):
    tl.static_assert(BLOCK % BLOCK_M == 0)
    tl.static_assert(BLOCK % BLOCK_N == 0)
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    SUB: tl.constexpr = BLOCK // BLOCK_N
    pid_m, pid_bh = _program_tile(schedule, num_m_tiles, REVERSE_M, SCHEDULED)
    off_b = pid_bh // num_heads
    off_h = pid_bh % num_heads
    off_kvh = off_h // group_size

    start_m = pid_m * BLOCK_M
    row = off_h * table_row_stride + start_m // BLOCK
    lo = tl.load(fwd_ptr + row)
    hi = tl.load(fwd_ptr + row + 1)
    n_full = tl.load(fwd_nfull + row)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    row_ok = offs_m < seq_len
    d_ok = offs_d < HEAD_DIM

    q_ptrs = Q + off_b.to(tl.int64) * stride_qb + off_h.to(tl.int64) * stride_qh \
        + start_m.to(tl.int64) * stride_qm \
        + tl.arange(0, BLOCK_M)[:, None] * stride_qm + offs_d[None, :] * stride_qd
    do_ptrs = DO + off_b.to(tl.int64) * stride_dob + off_h.to(tl.int64) * stride_doh \
        + start_m.to(tl.int64) * stride_dom \
        + tl.arange(0, BLOCK_M)[:, None] * stride_dom + offs_d[None, :] * stride_dod
    o_ptrs = Out + off_b.to(tl.int64) * stride_ob + off_h.to(tl.int64) * stride_oh \
        + start_m.to(tl.int64) * stride_om \
        + tl.arange(0, BLOCK_M)[:, None] * stride_om + offs_d[None, :] * stride_od
    q = _load_tile(q_ptrs, row_ok, d_ok, True, PAD_D)              # [BLOCK_M, D]
    do = _load_tile(do_ptrs, row_ok, d_ok, True, PAD_D)
    # this tile's rows of delta and lse2, for this loop and for the dK/dV kernel after it
    o = _load_tile(o_ptrs, row_ok, d_ok, True, PAD_D)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)        # [BLOCK_M]
    row_base = pid_bh.to(tl.int64) * seq_len                      # LSE/Delta/LSE2: (B, H, N)
    if HAS_DLSE:
        delta -= tl.load(DLSE + row_base + offs_m, mask=row_ok, other=0.0)
    lse = tl.load(LSE + row_base + offs_m, mask=row_ok, other=0.0)
    lse2 = tl.where(lse == float("-inf"), 0.0, lse * 1.4426950408889634)
    tl.store(Delta + row_base + offs_m, delta, mask=row_ok)
    tl.store(LSE2 + row_base + offs_m, lse2, mask=row_ok)
    K_head = _head_base(K, off_b, off_kvh, stride_kb, stride_kh, USE_TMA)
    V_head = _head_base(V, off_b, off_kvh, stride_vb, stride_vh, USE_TMA)
    dq = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)

    dq = _dq_inner(dq, q, do, lse2, delta, K_head, V_head, off_b, off_kvh, fwd_idx,
                   lo * SUB, (lo + n_full) * SUB, offs_m, offs_n, offs_d,
                   stride_kn, stride_kd, stride_vn, stride_vd,
                   qk_scale, seq_len, kv_len,
                   BLOCK, BLOCK_N, HEAD_DIM, HEAD_DIM_PAD,
                   False, CAUSAL, UPCAST, PRECISION, USE_TMA)
    dq = _dq_inner(dq, q, do, lse2, delta, K_head, V_head, off_b, off_kvh, fwd_idx,
                   (lo + n_full) * SUB, hi * SUB, offs_m, offs_n, offs_d,
                   stride_kn, stride_kd, stride_vn, stride_vd,
                   qk_scale, seq_len, kv_len,
                   BLOCK, BLOCK_N, HEAD_DIM, HEAD_DIM_PAD,
                   True, CAUSAL, UPCAST, PRECISION, USE_TMA)
    dq = dq * sm_scale
    dq_ptrs = DQ + off_b.to(tl.int64) * stride_dqb + off_h.to(tl.int64) * stride_dqh \
        + start_m.to(tl.int64) * stride_dqm \
        + tl.arange(0, BLOCK_M)[:, None] * stride_dqm + offs_d[None, :] * stride_dqd
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
