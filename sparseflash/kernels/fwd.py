"""Forward block-sparse FlashAttention kernel (pure ``@triton.jit`` code).

One program per (query tile, batch * head). It walks the CSR row of its query block in
the layout's forward tables (see :class:`sparseflash.layout.BlockLayout`): first the
``fwd_nfull`` full blocks through an unmasked loop, then the partial blocks through a
masked loop (length bounds and the causal line). Blocks the table omits are never read.

Softmax runs in base 2: ``qk_scale = scale * log2(e)`` is folded into the scores, and the
row statistics ``m_i`` (running max, log2 units) and ``l_i`` (running sum) are fp32.
The log-sum-exp is stored in natural-log units, ``-inf`` for rows that see no key.

Tiles: ``BLOCK_M`` query rows per program and ``BLOCK_N`` keys per inner step. Both divide
the layout's ``BLOCK`` (a key block is walked as ``BLOCK // BLOCK_N`` sub-tiles, a query
block is split over ``BLOCK // BLOCK_M`` programs); a sub-tile of a full block is full,
a sub-tile of a partial block goes through the masked loop, so the table contract holds
tile by tile.
"""
import triton
import triton.language as tl

from .tiles import (LN2, _alibi2, _tanh, _block_at, _dot, _exp, _head_base, _keep, _key_ok, _load_rows,
                    _column_split_scores, _load_tile, _log2_scores, _program_tile, _query_tile, _slot_sequence,
                    _softcap_shift, _visible)


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K_head, V_head, KPM, kpm_row, off_b, off_kvh, idx_ptr, it_lo, it_hi,
               rows_pos, row_ok, offs_n, offs_d, pos_ref,
               stride_kn, stride_kd, stride_vn, stride_vd,
               qk_scale, k_row0, k_lo, k_hi, j0, window_left, window_right,
               softcap2, alibi2, seed, rng_offset, bh, q_row0, drop_threshold, drop_scale,
               BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
               HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr,
               HAS_WR: tl.constexpr, HAS_KPM: tl.constexpr,
               HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, NATURAL: tl.constexpr,
               UPCAST: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
               FIXED: tl.constexpr):
    # Key block j of the table is absolute block j0 + j; key position u is tensor row
    # u + k_row0; the sequence's keys are positions [k_lo, k_hi).
    SUB: tl.constexpr = BLOCK // BLOCK_N
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    # NATURAL (a huge scale): scores and statistics in natural units, the max subtracted before
    # any rounding multiply, so the backward recomputes the max's exponent as exactly 0
    TRANSFORM: tl.constexpr = HAS_SOFTCAP or HAS_ALIBI or NATURAL
    CAP_MAX: tl.constexpr = (HAS_SOFTCAP == 2) and (not HAS_ALIBI) and (not NATURAL)
    # FIXED (HAS_SOFTCAP 12, launch._portable_softcap): the folded softcap bounds every score,
    # so a fixed shift (m_i, set by the caller and never moved) replaces the running max
    tl.static_assert((not FIXED) or CAP_MAX)
    d_ok = offs_d < HEAD_DIM
    if HAS_ALIBI == 2:
        acol = alibi2 * offs_n.to(tl.float32)         # tiles.py _column_split_scores
    next_idx = _block_at(idx_ptr, it_lo, it_hi, SUB)
    for it in range(it_lo, it_hi):
        kv_block_idx = next_idx
        next_idx = _block_at(idx_ptr, it + 1, it_hi, SUB)
        start_n = (kv_block_idx + j0) * BLOCK + (it % SUB) * BLOCK_N  # absolute position
        cols_pos = start_n + offs_n                                   # [BLOCK_N]
        col_ok = (cols_pos >= k_lo) & (cols_pos < k_hi)
        kT = _load_rows(K_head, off_b, off_kvh, start_n + k_row0, offs_n, offs_d, col_ok, d_ok,
                        stride_kn, stride_kd, BLOCK_N, HEAD_DIM_PAD, MASKED, PAD_D,
                        True, USE_TMA)                                # [D, BLOCK_N]
        qk = _dot(q, kT, None, UPCAST, PRECISION)                     # [BLOCK_M, BLOCK_N]
        if MASKED or TRANSFORM:
            if CAP_MAX:
                # folded softcap alone: the row max over tanh, times the cap (> 0, so the same
                # max), and cap * tanh - max is one FMA inside exp2
                s2 = _tanh(qk * qk_scale, UPCAST, PRECISION)
            elif HAS_ALIBI == 2:
                s2, shift, _ = _column_split_scores(qk, qk_scale, softcap2, alibi2, acol, start_n,
                                                    pos_ref, HAS_SOFTCAP, UPCAST, PRECISION)
            else:
                s2, _ = _log2_scores(qk, qk_scale, softcap2, alibi2, pos_ref, rows_pos[:, None],
                                     cols_pos[None, :], HAS_SOFTCAP, HAS_ALIBI, UPCAST, PRECISION)
            if MASKED:
                key_ok = _key_ok(KPM, kpm_row, k_row0, cols_pos, col_ok, HAS_KPM)
                visible = _visible(rows_pos, cols_pos, row_ok, key_ok, window_left, window_right,
                                   CAUSAL, HAS_WL, HAS_WR)
                s2 = tl.where(visible, s2, float("-inf"))
            if FIXED:
                m_new = m_i
            elif CAP_MAX:
                m_new = tl.maximum(m_i, tl.max(s2, 1) * softcap2)
            elif HAS_ALIBI == 2:
                m_new = tl.maximum(m_i, tl.max(s2, 1) + shift)
            else:
                m_new = tl.maximum(m_i, tl.max(s2, 1))
            # a row may have seen nothing yet: subtract 0 instead of -inf (avoids inf - inf)
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
            if CAP_MAX:
                p = tl.math.exp2(softcap2 * s2 - m_use[:, None])
            elif HAS_ALIBI == 2:
                p = _exp(s2 - (m_use - shift)[:, None], NATURAL)
            else:
                p = _exp(s2 - m_use[:, None], NATURAL)
        else:
            # scale after the row max (qk_scale > 0), so scale-and-subtract is one FMA
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            m_use = m_new
            p = tl.math.exp2(qk * qk_scale - m_use[:, None])
        if FIXED:
            l_i = l_i + tl.sum(p, 1)
        else:
            alpha = _exp(m_i - m_use, NATURAL)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
        v = _load_rows(V_head, off_b, off_kvh, start_n + k_row0, offs_n, offs_d, col_ok, d_ok,
                       stride_vn, stride_vd, BLOCK_N, HEAD_DIM_PAD, MASKED, PAD_D,
                       False, USE_TMA)                                # [BLOCK_N, D]
        if HAS_DROPOUT:
            # the normaliser l_i sums every probability; only the values see the dropout
            keep = _keep(seed, rng_offset, bh, pos_ref, q_row0, start_n, drop_threshold,
                         rows_pos.shape[0], BLOCK_N, HAS_DROPOUT)
            p = tl.where(keep, p * drop_scale, 0.0)
        acc = _dot(p.to(v.dtype), v, acc, UPCAST, PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["q_len", "k_len", "q_pos", "k_pos", "nq", "nk", "seed", "rng_offset"])
def _fwd_kernel(Q, K, V, Out, LSE,
                fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed, rng_offset, num_m_tiles,
                stride_qb, stride_qh, stride_qm, stride_qd,
                stride_kb, stride_kh, stride_kn, stride_kd,
                stride_vb, stride_vh, stride_vn, stride_vd,
                stride_ob, stride_oh, stride_om, stride_od,
                stride_kpm_b, num_heads, group_size, lse_len,
                q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1,
                window_left, window_right, qk_scale,
                softcap2, stride_alibi_b, drop_threshold, drop_scale,
                BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
                HAS_KPM: tl.constexpr, PER_SEQ: tl.constexpr, PACKED: tl.constexpr,
                HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr, HAS_DROPOUT: tl.constexpr, NATURAL: tl.constexpr,
                REVERSE_M: tl.constexpr,
                UPCAST: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
                SCHEDULED: tl.constexpr):
    tl.static_assert(BLOCK % BLOCK_M == 0)
    tl.static_assert(BLOCK % BLOCK_N == 0)
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    SUB: tl.constexpr = BLOCK // BLOCK_N
    # the softcap's code, and whether its softmax takes a fixed shift (HAS_SOFTCAP + 10:
    # launch._portable_softcap; tiles.py ``_softcap_shift``): no running max, no rescale (as
    # kernels/hopper.py ``_consume_tile``)
    SOFTCAP: tl.constexpr = HAS_SOFTCAP % 10
    FIXED: tl.constexpr = HAS_SOFTCAP >= 10
    pid_m, pid_sh = _program_tile(schedule, num_m_tiles, REVERSE_M, SCHEDULED)
    slot = pid_sh // num_heads                      # batch element, or document when PACKED
    off_h = pid_sh % num_heads
    off_kvh = off_h // group_size
    ts, off_b = _slot_sequence(slot, PER_SEQ, PACKED)

    q_start, q_lo, q_hi, k_start, k_lo, k_hi, start_m, row, tile_ok, nk_s, col_off = _query_tile(
        seqs, ts, pid_m, q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1, off_h,
        BLOCK, BLOCK_M, PER_SEQ)
    lo = tl.load(fwd_ptr + row)
    hi = tl.where(tile_ok, tl.load(fwd_ptr + row + 1), lo)
    n_full = tl.where(tile_ok, tl.load(fwd_nfull + row), 0)

    rows_pos = start_m + tl.arange(0, BLOCK_M)                        # absolute positions
    q_row0 = q_start - q_lo                                           # tensor row = pos + q_row0
    k_row0 = k_start - k_lo
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    row_ok = (rows_pos >= q_lo) & (rows_pos < q_hi)
    d_ok = offs_d < HEAD_DIM

    Q_head = Q + off_b.to(tl.int64) * stride_qb + off_h.to(tl.int64) * stride_qh
    K_head = _head_base(K, off_b, off_kvh, stride_kb, stride_kh, USE_TMA)
    V_head = _head_base(V, off_b, off_kvh, stride_vb, stride_vh, USE_TMA)
    q_ptrs = Q_head + (start_m + q_row0).to(tl.int64) * stride_qm \
        + tl.arange(0, BLOCK_M)[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = _load_tile(q_ptrs, row_ok, d_ok, True, PAD_D)              # [BLOCK_M, D]
    kpm_row = off_b.to(tl.int64) * stride_kpm_b
    j0 = k_lo // BLOCK
    alibi2 = _alibi2(ALIBI, off_b, off_h, stride_alibi_b, HAS_ALIBI, NATURAL)
    bh = off_b * num_heads + off_h

    if FIXED:
        m_i = tl.zeros([BLOCK_M], tl.float32) + _softcap_shift(softcap2)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)

    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K_head, V_head, KPM, kpm_row, off_b, off_kvh, fwd_idx,
                               lo * SUB, (lo + n_full) * SUB, rows_pos, row_ok, offs_n, offs_d, start_m,
                               stride_kn, stride_kd, stride_vn, stride_vd,
                               qk_scale, k_row0, k_lo, k_hi, j0, window_left, window_right,
                               softcap2, alibi2, seed, rng_offset, bh, q_row0, drop_threshold, drop_scale,
                               BLOCK, BLOCK_N, HEAD_DIM, HEAD_DIM_PAD,
                               False, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, SOFTCAP, HAS_ALIBI, HAS_DROPOUT, NATURAL,
                               UPCAST, PRECISION, USE_TMA, FIXED)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K_head, V_head, KPM, kpm_row, off_b, off_kvh, fwd_idx,
                               (lo + n_full) * SUB, hi * SUB, rows_pos, row_ok, offs_n, offs_d, start_m,
                               stride_kn, stride_kd, stride_vn, stride_vd,
                               qk_scale, k_row0, k_lo, k_hi, j0, window_left, window_right,
                               softcap2, alibi2, seed, rng_offset, bh, q_row0, drop_threshold, drop_scale,
                               BLOCK, BLOCK_N, HEAD_DIM, HEAD_DIM_PAD,
                               True, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, SOFTCAP, HAS_ALIBI, HAS_DROPOUT, NATURAL,
                               UPCAST, PRECISION, USE_TMA, FIXED)

    # rows that saw no key: output 0, lse -inf
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    if NATURAL:
        lse = tl.where(empty, float("-inf"), m_i + tl.log(l_safe))
    else:
        lse2 = m_i + tl.math.log2(l_safe)
        if HAS_ALIBI == 2:
            # the row term of the causal ALiBi bias the scores left out (tiles.py, _log2_scores)
            lse2 = lse2 - alibi2 * (rows_pos - start_m).to(tl.float32)
        lse = tl.where(empty, float("-inf"), lse2 * LN2)

    o_ptrs = Out + off_b.to(tl.int64) * stride_ob + off_h.to(tl.int64) * stride_oh \
        + (start_m + q_row0).to(tl.int64) * stride_om \
        + tl.arange(0, BLOCK_M)[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    # LSE is (B, H, lse_len) contiguous
    lse_ptrs = LSE + (off_b * num_heads + off_h).to(tl.int64) * lse_len + (rows_pos + q_row0)
    tl.store(lse_ptrs, lse, mask=row_ok)
