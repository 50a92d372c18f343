"""Backward block-sparse FlashAttention kernels (pure ``@triton.jit`` code).

Two kernels, launched in this order; nothing N x N is stored, each block's probabilities
are recomputed from the forward's log-sum-exp:

* ``_bwd_dq_kernel``: one program per (query tile, sequence * head), walking the forward
  row. Before its loop it computes, for its own rows, ``delta = rowsum(dO * O)`` (minus the
  gradient ``dlse`` of the returned log-sum-exp, which then folds into
  ``dS = P * (dP - delta)``) and ``lse2 = lse * log2(e)`` (0 for rows with no key, whose
  probabilities are then 0 everywhere), and stores both for the next kernel. This replaces
  a separate preprocess launch that read O and dO once more (benchmarks/NOTES.md, run 15).
* ``_bwd_dkdv_kernel``: one program per (key tile, sequence * kv head). It walks the
  transposed (``bwd_*``) CSR row of its key block, reading ``delta``/``lse2`` of each query
  block it meets; for GQA it loops over the query heads of the group inside the program,
  so dK/dV are written once, with no atomics, in a fixed order: deterministic.

Geometry (sequences, absolute positions, masks) is the forward's: see :mod:`.fwd`.
"""
import triton
import triton.language as tl

from .tiles import (LOG2E, _alibi2, _block_at, _dot, _exp, _head_base, _keep, _key_ok, _load_rows,
                    _column_split_scores, _load_tile, _log2_scores, _program_tile, _query_tile, _sequence, _slot_sequence,
                    _visible)


@triton.jit
def _dkdv_inner(dk, dv, k, v, Q_head, DO_head, LSE2_head, Delta_head, off_b, off_h,
                idx_ptr, it_lo, it_hi,
                cols_pos, cols_start, key_ok, offs_m, offs_d,
                stride_qm, stride_qd, stride_dom, stride_dod,
                qk_scale, q_row0, q_lo, q_hi, i0, window_left, window_right,
                softcap2, alibi2, seed, rng_offset, bh, k_row0, drop_threshold, drop_scale,
                BLOCK: tl.constexpr, BLOCK_M: tl.constexpr,
                HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr,
                HAS_WR: tl.constexpr,
                HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, NATURAL: tl.constexpr,
                UPCAST: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr):
    SUB: tl.constexpr = BLOCK // BLOCK_M
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    d_ok = offs_d < HEAD_DIM
    next_idx = _block_at(idx_ptr, it_lo, it_hi, SUB)
    for it in range(it_lo, it_hi):
        q_block_idx = next_idx
        next_idx = _block_at(idx_ptr, it + 1, it_hi, SUB)
        start_m = (q_block_idx + i0) * BLOCK + (it % SUB) * BLOCK_M   # absolute position
        rows_pos = start_m + offs_m                                   # [BLOCK_M]
        row_ok = (rows_pos >= q_lo) & (rows_pos < q_hi)
        qT = _load_rows(Q_head, off_b, off_h, start_m + q_row0, offs_m, offs_d, row_ok, d_ok,
                        stride_qm, stride_qd, BLOCK_M, HEAD_DIM_PAD, MASKED, PAD_D,
                        True, USE_TMA)                                # [D, BLOCK_M]
        if MASKED:
            lse2 = tl.load(LSE2_head + rows_pos + q_row0, mask=row_ok, other=0.0)
        else:
            lse2 = tl.load(LSE2_head + rows_pos + q_row0)
        qkT = _dot(k, qT, None, UPCAST, PRECISION)                   # [BLOCK_N, BLOCK_M]
        if HAS_ALIBI == 2:
            # the scores leave out the causal bias's row term: take it out of the LSE too
            lse2 = lse2 + alibi2 * (rows_pos - start_m).to(tl.float32)
        s2T, dcapT = _log2_scores(qkT, qk_scale, softcap2, alibi2, start_m, rows_pos[None, :],
                                  cols_pos[:, None], HAS_SOFTCAP, HAS_ALIBI, UPCAST, PRECISION)
        # a probability is <= 1: clamping the exponent keeps a peaked softmax (huge scale, where
        # recomputed scores differ from the forward's in the last bits) finite
        pT = _exp(tl.minimum(s2T - lse2[None, :], 0.0), NATURAL)
        if MASKED:
            visible = _visible(cols_pos, rows_pos, key_ok, row_ok, window_right, window_left,
                               False, HAS_WR, HAS_WL)                 # [BLOCK_N, BLOCK_M]
            if CAUSAL:
                visible = visible & (cols_pos[:, None] <= rows_pos[None, :])
            pT = tl.where(visible, pT, 0.0)
        do = _load_rows(DO_head, off_b, off_h, start_m + q_row0, offs_m, offs_d, row_ok, d_ok,
                        stride_dom, stride_dod, BLOCK_M, HEAD_DIM_PAD, MASKED, PAD_D,
                        False, USE_TMA)                               # [BLOCK_M, D]
        dpT = _dot(v, tl.trans(do), None, UPCAST, PRECISION)         # [BLOCK_N, BLOCK_M]
        if HAS_DROPOUT:
            keepT = tl.trans(_keep(seed, rng_offset, bh, start_m, q_row0, cols_start, drop_threshold,
                                   BLOCK_M, cols_pos.shape[0], HAS_DROPOUT))
            dv = _dot(tl.where(keepT, pT * drop_scale, 0.0).to(do.dtype), do, dv, UPCAST, PRECISION)
            dpT = tl.where(keepT, dpT * drop_scale, 0.0)
        else:
            dv = _dot(pT.to(do.dtype), do, dv, UPCAST, PRECISION)
        if MASKED:
            delta = tl.load(Delta_head + rows_pos + q_row0, mask=row_ok, other=0.0)
        else:
            delta = tl.load(Delta_head + rows_pos + q_row0)
        dsT = pT * (dpT - delta[None, :])
        if HAS_SOFTCAP:
            dsT = dsT * dcapT
        dk = _dot(dsT.to(qT.dtype), tl.trans(qT), dk, UPCAST, PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=["q_len", "k_len", "q_pos", "k_pos", "nq", "nk", "seed", "rng_offset"])
def _bwd_dkdv_kernel(Q, K, V, DO, LSE2, Delta, DK, DV,
                     bwd_ptr, bwd_idx, bwd_nfull, seqs, KPM, ALIBI, schedule, seed, rng_offset,
                     num_n_tiles,
                     stride_qb, stride_qh, stride_qm, stride_qd,
                     stride_kb, stride_kh, stride_kn, stride_kd,
                     stride_vb, stride_vh, stride_vn, stride_vd,
                     stride_dob, stride_doh, stride_dom, stride_dod,
                     stride_dkb, stride_dkh, stride_dkn, stride_dkd,
                     stride_dvb, stride_dvh, stride_dvn, stride_dvd,
                     stride_kpm_b, num_heads, num_kv_heads, lse_len,
                     q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1,
                     window_left, window_right, sm_scale, qk_scale,
                     softcap2, stride_alibi_b, drop_threshold, drop_scale,
                     BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     GROUP_SIZE: tl.constexpr,
                     HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                     CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
                     HAS_KPM: tl.constexpr, PER_SEQ: tl.constexpr, PACKED: tl.constexpr,
                     HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, NATURAL: tl.constexpr,
                     UPCAST: tl.constexpr, PRECISION: tl.constexpr,
                     USE_TMA: tl.constexpr, SCHEDULED: tl.constexpr):
    tl.static_assert(BLOCK % BLOCK_M == 0)
    tl.static_assert(BLOCK % BLOCK_N == 0)
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    SUB: tl.constexpr = BLOCK // BLOCK_M
    pid_n, pid_skv = _program_tile(schedule, num_n_tiles, False, SCHEDULED)
    slot = pid_skv // num_kv_heads
    off_kvh = pid_skv % num_kv_heads
    ts, off_b = _slot_sequence(slot, PER_SEQ, PACKED)
    q_start, q_len, k_start, k_len, q_lo, k_lo, row_off, col_off, nq, nk = _sequence(
        seqs, ts, q_len, k_len, q_pos, k_pos, nq, nk, PER_SEQ)
    q_hi = q_lo + q_len
    k_hi = k_lo + k_len
    q_row0 = q_start - q_lo                                           # tensor row = pos + q_row0
    k_row0 = k_start - k_lo
    i0 = q_lo // BLOCK

    start_n = (k_lo // BLOCK_N + pid_n) * BLOCK_N                     # absolute position
    tile_ok = start_n < k_hi
    cols_pos = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    col_ok = (cols_pos >= k_lo) & (cols_pos < k_hi)
    d_ok = offs_d < HEAD_DIM
    key_ok = _key_ok(KPM, off_b.to(tl.int64) * stride_kpm_b, k_row0, cols_pos, col_ok, HAS_KPM)

    k_ptrs = K + off_b.to(tl.int64) * stride_kb + off_kvh.to(tl.int64) * stride_kh \
        + (start_n + k_row0).to(tl.int64) * stride_kn \
        + tl.arange(0, BLOCK_N)[:, None] * stride_kn + offs_d[None, :] * stride_kd
    v_ptrs = V + off_b.to(tl.int64) * stride_vb + off_kvh.to(tl.int64) * stride_vh \
        + (start_n + k_row0).to(tl.int64) * stride_vn \
        + tl.arange(0, BLOCK_N)[:, None] * stride_vn + offs_d[None, :] * stride_vd
    k = _load_tile(k_ptrs, col_ok, d_ok, True, PAD_D)                  # [BLOCK_N, D]
    v = _load_tile(v_ptrs, col_ok, d_ok, True, PAD_D)
    dk = tl.zeros([BLOCK_N, HEAD_DIM_PAD], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM_PAD], tl.float32)

    # the query heads sharing this kv head, in a fixed order (deterministic, no atomics)
    for g in range(GROUP_SIZE):
        off_h = off_kvh * GROUP_SIZE + g
        col = col_off + off_h * table_heads_gt1 * nk + start_n // BLOCK - k_lo // BLOCK
        col = tl.where(tile_ok, col, 0)
        lo = tl.load(bwd_ptr + col)
        hi = tl.where(tile_ok, tl.load(bwd_ptr + col + 1), lo)
        n_full = tl.where(tile_ok, tl.load(bwd_nfull + col), 0)
        bh = off_b * num_heads + off_h
        Q_head = _head_base(Q, off_b, off_h, stride_qb, stride_qh, USE_TMA)
        DO_head = _head_base(DO, off_b, off_h, stride_dob, stride_doh, USE_TMA)
        LSE2_head = LSE2 + bh.to(tl.int64) * lse_len
        Delta_head = Delta + bh.to(tl.int64) * lse_len
        alibi2 = _alibi2(ALIBI, off_b, off_h, stride_alibi_b, HAS_ALIBI, NATURAL)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q_head, DO_head, LSE2_head, Delta_head, off_b, off_h, bwd_idx,
                             lo * SUB, (lo + n_full) * SUB, cols_pos, start_n, key_ok, offs_m, offs_d,
                             stride_qm, stride_qd, stride_dom, stride_dod,
                             qk_scale, q_row0, q_lo, q_hi, i0, window_left, window_right,
                             softcap2, alibi2, seed, rng_offset, bh, k_row0, drop_threshold, drop_scale,
                             BLOCK, BLOCK_M, HEAD_DIM, HEAD_DIM_PAD,
                             False, CAUSAL, HAS_WL, HAS_WR, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, NATURAL,
                             UPCAST, PRECISION, USE_TMA)
        dk, dv = _dkdv_inner(dk, dv, k, v, Q_head, DO_head, LSE2_head, Delta_head, off_b, off_h, bwd_idx,
                             (lo + n_full) * SUB, hi * SUB, cols_pos, start_n, key_ok, offs_m, offs_d,
                             stride_qm, stride_qd, stride_dom, stride_dod,
                             qk_scale, q_row0, q_lo, q_hi, i0, window_left, window_right,
                             softcap2, alibi2, seed, rng_offset, bh, k_row0, drop_threshold, drop_scale,
                             BLOCK, BLOCK_M, HEAD_DIM, HEAD_DIM_PAD,
                             True, CAUSAL, HAS_WL, HAS_WR, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, NATURAL,
                             UPCAST, PRECISION, USE_TMA)

    dk = dk * sm_scale
    out_mask = col_ok[:, None] & d_ok[None, :]
    dk_ptrs = DK + off_b.to(tl.int64) * stride_dkb + off_kvh.to(tl.int64) * stride_dkh \
        + (start_n + k_row0).to(tl.int64) * stride_dkn \
        + tl.arange(0, BLOCK_N)[:, None] * stride_dkn + offs_d[None, :] * stride_dkd
    dv_ptrs = DV + off_b.to(tl.int64) * stride_dvb + off_kvh.to(tl.int64) * stride_dvh \
        + (start_n + k_row0).to(tl.int64) * stride_dvn \
        + tl.arange(0, BLOCK_N)[:, None] * stride_dvn + offs_d[None, :] * stride_dvd
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=out_mask)
    tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=out_mask)


@triton.jit
def _dq_inner(dq, q, do, lse2, delta, K_head, V_head, KPM, kpm_row, off_b, off_kvh, idx_ptr,
              it_lo, it_hi, rows_pos, row_ok, offs_n, offs_d, pos_ref,
              stride_kn, stride_kd, stride_vn, stride_vd,
              qk_scale, k_row0, k_lo, k_hi, j0, window_left, window_right,
              softcap2, alibi2, seed, rng_offset, bh, q_row0, drop_threshold, drop_scale,
              BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
              HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr,
              HAS_WR: tl.constexpr, HAS_KPM: tl.constexpr,
              HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, NATURAL: tl.constexpr,
              UPCAST: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr):
    SUB: tl.constexpr = BLOCK // BLOCK_N
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    d_ok = offs_d < HEAD_DIM
    if HAS_ALIBI == 2:
        acol = alibi2 * offs_n.to(tl.float32)         # tiles.py _column_split_scores
    next_idx = _block_at(idx_ptr, it_lo, it_hi, SUB)
    for it in range(it_lo, it_hi):
        kv_block_idx = next_idx
        next_idx = _block_at(idx_ptr, it + 1, it_hi, SUB)
        start_n = (kv_block_idx + j0) * BLOCK + (it % SUB) * BLOCK_N  # absolute position
        cols_pos = start_n + offs_n
        col_ok = (cols_pos >= k_lo) & (cols_pos < k_hi)
        kT = _load_rows(K_head, off_b, off_kvh, start_n + k_row0, offs_n, offs_d, col_ok, d_ok,
                        stride_kn, stride_kd, BLOCK_N, HEAD_DIM_PAD, MASKED, PAD_D,
                        True, USE_TMA)                                # [D, BLOCK_N]
        vT = _load_rows(V_head, off_b, off_kvh, start_n + k_row0, offs_n, offs_d, col_ok, d_ok,
                        stride_vn, stride_vd, BLOCK_N, HEAD_DIM_PAD, MASKED, PAD_D,
                        True, USE_TMA)
        qk = _dot(q, kT, None, UPCAST, PRECISION)                     # [BLOCK_M, BLOCK_N]
        if HAS_ALIBI == 2:
            s2, shift, dcap = _column_split_scores(qk, qk_scale, softcap2, alibi2, acol, start_n,
                                                   pos_ref, HAS_SOFTCAP, UPCAST, PRECISION)
            lse_t = lse2 - shift
        else:
            s2, dcap = _log2_scores(qk, qk_scale, softcap2, alibi2, pos_ref, rows_pos[:, None],
                                    cols_pos[None, :], HAS_SOFTCAP, HAS_ALIBI, UPCAST, PRECISION)
            lse_t = lse2
        p = _exp(tl.minimum(s2 - lse_t[:, None], 0.0), NATURAL)     # <= 1, as in _dkdv_inner
        if MASKED:
            key_ok = _key_ok(KPM, kpm_row, k_row0, cols_pos, col_ok, HAS_KPM)
            visible = _visible(rows_pos, cols_pos, row_ok, key_ok, window_left, window_right,
                               CAUSAL, HAS_WL, HAS_WR)
            p = tl.where(visible, p, 0.0)
        dp = _dot(do, vT, None, UPCAST, PRECISION)
        if HAS_DROPOUT:
            keep = _keep(seed, rng_offset, bh, pos_ref, q_row0, start_n, drop_threshold,
                         rows_pos.shape[0], BLOCK_N, HAS_DROPOUT)
            dp = tl.where(keep, dp * drop_scale, 0.0)
        ds = p * (dp - delta[:, None])
        if HAS_SOFTCAP:
            ds = ds * dcap
        dq = _dot(ds.to(kT.dtype), tl.trans(kT), dq, UPCAST, PRECISION)
    return dq


@triton.jit(do_not_specialize=["q_len", "k_len", "q_pos", "k_pos", "nq", "nk", "seed", "rng_offset"])
def _bwd_dq_kernel(Q, K, V, DO, Out, LSE, DLSE, LSE2, Delta, DQ,
                   fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed, rng_offset,
                   num_m_tiles,
                   stride_qb, stride_qh, stride_qm, stride_qd,
                   stride_kb, stride_kh, stride_kn, stride_kd,
                   stride_vb, stride_vh, stride_vn, stride_vd,
                   stride_dob, stride_doh, stride_dom, stride_dod,
                   stride_ob, stride_oh, stride_om, stride_od,
                   stride_dqb, stride_dqh, stride_dqm, stride_dqd,
                   stride_kpm_b, num_heads, group_size, lse_len,
                   q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1,
                   window_left, window_right, sm_scale, qk_scale,
                   softcap2, stride_alibi_b, drop_threshold, drop_scale,
                   BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                   CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
                   HAS_KPM: tl.constexpr, PER_SEQ: tl.constexpr, PACKED: tl.constexpr,
                   HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, NATURAL: tl.constexpr,
                   REVERSE_M: tl.constexpr,
                   UPCAST: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
                   SCHEDULED: tl.constexpr, HAS_DLSE: tl.constexpr, STATS_ONLY: tl.constexpr = False,
                   FOLD_ROWS: tl.constexpr = False):
    """dQ of one query tile, and the rows of delta and lse2 the dK/dV kernel reads (with
    STATS_ONLY those alone, for the Hopper dK/dV kernel that also computes dQ).

    FOLD_ROWS (the Hopper dK/dV kernel reads lse2, HAS_ALIBI 2): the stored lse2 of query t
    holds the causal ALiBi's row term of the Hopper kernel's 64-query steps, ``alibi2 * (t mod
    64)`` (its steps start at multiples of 64 in the table's positions: ``t & 63`` is ``t`` less
    the step's start, negative positions included), which that kernel
    would otherwise add to every step's 64 values of lse2 (kernels/hopper.py
    ``_bwd_consumer``)."""
    tl.static_assert(BLOCK % BLOCK_M == 0)
    tl.static_assert(BLOCK % BLOCK_N == 0)
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    SUB: tl.constexpr = BLOCK // BLOCK_N
    pid_m, pid_sh = _program_tile(schedule, num_m_tiles, REVERSE_M, SCHEDULED)
    slot = pid_sh // num_heads
    off_h = pid_sh % num_heads
    off_kvh = off_h // group_size
    ts, off_b = _slot_sequence(slot, PER_SEQ, PACKED)

    q_start, q_lo, q_hi, k_start, k_lo, k_hi, start_m, row, tile_ok, nk_s, col_off = _query_tile(
        seqs, ts, pid_m, q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1, off_h,
        BLOCK, BLOCK_M, PER_SEQ)
    lo = tl.load(fwd_ptr + row)
    hi = tl.where(tile_ok, tl.load(fwd_ptr + row + 1), lo)
    n_full = tl.where(tile_ok, tl.load(fwd_nfull + row), 0)

    rows_pos = start_m + tl.arange(0, BLOCK_M)
    q_row0 = q_start - q_lo
    k_row0 = k_start - k_lo
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    row_ok = (rows_pos >= q_lo) & (rows_pos < q_hi)
    d_ok = offs_d < HEAD_DIM
    row0 = (start_m + q_row0).to(tl.int64)

    q_ptrs = Q + off_b.to(tl.int64) * stride_qb + off_h.to(tl.int64) * stride_qh + row0 * stride_qm \
        + tl.arange(0, BLOCK_M)[:, None] * stride_qm + offs_d[None, :] * stride_qd
    do_ptrs = DO + off_b.to(tl.int64) * stride_dob + off_h.to(tl.int64) * stride_doh + row0 * stride_dom \
        + tl.arange(0, BLOCK_M)[:, None] * stride_dom + offs_d[None, :] * stride_dod
    o_ptrs = Out + off_b.to(tl.int64) * stride_ob + off_h.to(tl.int64) * stride_oh + row0 * stride_om \
        + tl.arange(0, BLOCK_M)[:, None] * stride_om + offs_d[None, :] * stride_od
    do = _load_tile(do_ptrs, row_ok, d_ok, True, PAD_D)
    # this tile's rows of delta and lse2, for this loop and for the dK/dV kernel after it
    o = _load_tile(o_ptrs, row_ok, d_ok, True, PAD_D)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)        # [BLOCK_M]
    stat = (off_b * num_heads + off_h).to(tl.int64) * lse_len + rows_pos + q_row0  # (B, H, N)
    if HAS_DLSE:
        delta -= tl.load(DLSE + stat, mask=row_ok, other=0.0)
    lse = tl.load(LSE + stat, mask=row_ok, other=0.0)
    lse2 = tl.where(lse == float("-inf"), 0.0, lse if NATURAL else lse * LOG2E)
    tl.store(Delta + stat, delta, mask=row_ok)
    alibi2 = _alibi2(ALIBI, off_b, off_h, stride_alibi_b, HAS_ALIBI, NATURAL)
    if FOLD_ROWS:
        tl.store(LSE2 + stat, lse2 + alibi2 * (rows_pos & 63).to(tl.float32), mask=row_ok)
    else:
        tl.store(LSE2 + stat, lse2, mask=row_ok)
    if not STATS_ONLY:
        # (STATS_ONLY: the statistics alone, for the Hopper dK/dV kernel that also computes dQ)
        q = _load_tile(q_ptrs, row_ok, d_ok, True, PAD_D)              # [BLOCK_M, D]
        K_head = _head_base(K, off_b, off_kvh, stride_kb, stride_kh, USE_TMA)
        V_head = _head_base(V, off_b, off_kvh, stride_vb, stride_vh, USE_TMA)
        kpm_row = off_b.to(tl.int64) * stride_kpm_b
        j0 = k_lo // BLOCK
        bh = off_b * num_heads + off_h
        dq = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)
        if HAS_ALIBI == 2:
            # the scores leave out the causal bias's row term (tiles.py, _log2_scores): so does
            # this loop's LSE (the stored lse2 above keeps it, or with FOLD_ROWS its part past
            # the Hopper kernel's 64-query step start, for the dK/dV kernel)
            lse2 = lse2 + alibi2 * (rows_pos - start_m).to(tl.float32)

        dq = _dq_inner(dq, q, do, lse2, delta, K_head, V_head, KPM, kpm_row, off_b, off_kvh, fwd_idx,
                       lo * SUB, (lo + n_full) * SUB, rows_pos, row_ok, offs_n, offs_d, start_m,
                       stride_kn, stride_kd, stride_vn, stride_vd,
                       qk_scale, k_row0, k_lo, k_hi, j0, window_left, window_right,
                       softcap2, alibi2, seed, rng_offset, bh, q_row0, drop_threshold, drop_scale,
                       BLOCK, BLOCK_N, HEAD_DIM, HEAD_DIM_PAD,
                       False, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, NATURAL,
                       UPCAST, PRECISION, USE_TMA)
        dq = _dq_inner(dq, q, do, lse2, delta, K_head, V_head, KPM, kpm_row, off_b, off_kvh, fwd_idx,
                       (lo + n_full) * SUB, hi * SUB, rows_pos, row_ok, offs_n, offs_d, start_m,
                       stride_kn, stride_kd, stride_vn, stride_vd,
                       qk_scale, k_row0, k_lo, k_hi, j0, window_left, window_right,
                       softcap2, alibi2, seed, rng_offset, bh, q_row0, drop_threshold, drop_scale,
                       BLOCK, BLOCK_N, HEAD_DIM, HEAD_DIM_PAD,
                       True, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, NATURAL,
                       UPCAST, PRECISION, USE_TMA)
        dq = dq * sm_scale
        dq_ptrs = DQ + off_b.to(tl.int64) * stride_dqb + off_h.to(tl.int64) * stride_dqh + row0 * stride_dqm \
            + tl.arange(0, BLOCK_M)[:, None] * stride_dqm + offs_d[None, :] * stride_dqd
        tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _dq_convert_kernel(ACC, DQ, scale, row_elems, acc_stride, acc_pad, BLOCK: tl.constexpr):
    """The fused Hopper backward's last step: ``DQ = scale * ACC`` in DQ's dtype, where ACC is
    the fp32 accumulator the dK/dV kernel added dS K to. Per (batch * head) ``pid 1``, ACC's
    rows start ``acc_pad`` elements (a block of padding rows) into a stride of ``acc_stride``;
    DQ is contiguous, ``row_elems`` (tokens x head dim) per (batch * head). One program per
    ``BLOCK`` elements: contiguous vectors in and out (torch's cast-and-multiply took 0.108 ms
    at 16K x 16 heads x d=128 on an H200, 1.9 TB/s, run20)."""
    bh = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < row_elems
    x = tl.load(ACC + bh * acc_stride + acc_pad + offs, mask=ok, other=0.0)
    tl.store(DQ + bh * row_elems + offs, (x * scale).to(DQ.dtype.element_ty), mask=ok)
