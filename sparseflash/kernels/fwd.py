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


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # Triton 3.6's interpreter multiplies bf16 operands wrongly: upcast them there.
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=PRECISION)
    else:
        return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _load_tile(ptrs, row_ok, col_ok, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    """Load a 2-D tile, masking only the axes that can run out of bounds."""
    if MASK_ROWS and MASK_COLS:
        return tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    elif MASK_ROWS:
        return tl.load(ptrs, mask=row_ok[:, None], other=0.0)
    elif MASK_COLS:
        return tl.load(ptrs, mask=col_ok[None, :], other=0.0)
    else:
        return tl.load(ptrs)


@triton.jit
def _block_at(idx_ptr, it, it_hi, SUB: tl.constexpr):
    """Block index of loop trip ``it`` (a table entry is walked as SUB sub-tiles), 0 past the end.

    The loops load it one trip ahead and carry it: the tile addresses then depend on a
    loop-carried value instead of a load in the same trip, so Triton's pipeliner can issue
    the next tiles' copies early. Worth +11..22% forward (benchmarks/NOTES.md, run 5).
    """
    return tl.load(idx_ptr + it // SUB, mask=it < it_hi, other=0)


@triton.jit
def _program_tile(schedule, num_tiles, REVERSE: tl.constexpr, SCHEDULED: tl.constexpr):
    """(tile, batch*head) this program computes.

    SCHEDULED: a 1-D grid reads ``bh * num_tiles + tile`` from a launch-order table that puts
    the heavy rows (a global token's row walks every block) first, so they do not start last
    and leave a tail. Otherwise the 2-D grid gives the pair directly, tiles of one head
    consecutive (K/V stay in L2), in reverse when REVERSE (causal: long rows first).
    """
    if SCHEDULED:
        t = tl.load(schedule + tl.program_id(0))
        return t % num_tiles, t // num_tiles
    else:
        pid = tl.program_id(0)
        if REVERSE:
            pid = tl.num_programs(0) - 1 - pid
        return pid, tl.program_id(1)


@triton.jit
def _head_base(src, off_b, off_h, stride_b, stride_h, USE_TMA: tl.constexpr):
    """What the loops read a head from: the descriptor itself, or the head's base pointer."""
    if USE_TMA:
        return src
    else:
        return src + off_b.to(tl.int64) * stride_b + off_h.to(tl.int64) * stride_h


@triton.jit
def _load_rows(src, off_b, off_h, start, offs, offs_d, row_ok, d_ok, stride_n, stride_d,
               ROWS: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, MASK_ROWS: tl.constexpr,
               PAD_D: tl.constexpr, TRANSPOSED: tl.constexpr, USE_TMA: tl.constexpr):
    """Rows ``start + offs`` of one head: ``[ROWS, D]``, or ``[D, ROWS]`` if TRANSPOSED.

    With USE_TMA, ``src`` is a 4-D (batch, heads, seq, head_dim) tensor descriptor with block
    [1, 1, ROWS, HEAD_DIM_PAD]: the copy engine zero-fills rows past the sequence and columns
    past head_dim, so no masks are needed. Otherwise ``src`` is the head's base pointer.
    """
    if USE_TMA:
        tile = src.load([off_b, off_h, start, 0]).reshape(ROWS, HEAD_DIM_PAD)
        if TRANSPOSED:
            return tl.trans(tile)
        else:
            return tile
    else:
        base = src + start.to(tl.int64) * stride_n   # int64: start * stride can pass 2**31
        if TRANSPOSED:
            ptrs = base + offs[None, :] * stride_n + offs_d[:, None] * stride_d
            return _load_tile(ptrs, d_ok, row_ok, PAD_D, MASK_ROWS)
        else:
            ptrs = base + offs[:, None] * stride_n + offs_d[None, :] * stride_d
            return _load_tile(ptrs, row_ok, d_ok, MASK_ROWS, PAD_D)


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K_head, V_head, off_b, off_kvh, idx_ptr, it_lo, it_hi,
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
        cols = start_n + offs_n                                   # [BLOCK_N]
        col_ok = cols < kv_len
        kT = _load_rows(K_head, off_b, off_kvh, start_n, offs_n, offs_d, col_ok, d_ok,
                        stride_kn, stride_kd, BLOCK_N, HEAD_DIM_PAD, MASKED, PAD_D,
                        True, USE_TMA)                            # [D, BLOCK_N]
        qk = _dot(q, kT, None, UPCAST, PRECISION)                 # [BLOCK_M, BLOCK_N]
        if MASKED:
            visible = col_ok[None, :]
            if CAUSAL:
                visible = visible & (cols[None, :] <= offs_m[:, None] + (kv_len - seq_len))
            qk = tl.where(visible, qk * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            # a row may have seen nothing yet: subtract 0 instead of -inf (avoids inf - inf)
            m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(qk - m_use[:, None])
        else:
            # scale after the row max (qk_scale > 0), so scale-and-subtract is one FMA
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            m_use = m_new
            p = tl.math.exp2(qk * qk_scale - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = _load_rows(V_head, off_b, off_kvh, start_n, offs_n, offs_d, col_ok, d_ok,
                       stride_vn, stride_vd, BLOCK_N, HEAD_DIM_PAD, MASKED, PAD_D,
                       False, USE_TMA)                            # [BLOCK_N, D]
        acc = _dot(p.to(v.dtype), v, acc, UPCAST, PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, Out, LSE,
                fwd_ptr, fwd_idx, fwd_nfull, schedule, num_m_tiles,
                stride_qb, stride_qh, stride_qm, stride_qd,
                stride_kb, stride_kh, stride_kn, stride_kd,
                stride_vb, stride_vh, stride_vn, stride_vd,
                stride_ob, stride_oh, stride_om, stride_od,
                num_heads, group_size, seq_len, kv_len, table_row_stride,
                qk_scale,
                BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                CAUSAL: tl.constexpr, REVERSE_M: tl.constexpr,
                UPCAST: tl.constexpr, PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
                SCHEDULED: tl.constexpr):
    tl.static_assert(BLOCK % BLOCK_M == 0)
    tl.static_assert(BLOCK % BLOCK_N == 0)
    PAD_D: tl.constexpr = HEAD_DIM != HEAD_DIM_PAD
    SUB: tl.constexpr = BLOCK // BLOCK_N
    pid_m, pid_bh = _program_tile(schedule, num_m_tiles, REVERSE_M, SCHEDULED)
    off_b = pid_bh // num_heads
    off_h = pid_bh % num_heads
    off_kvh = off_h // group_size

    start_m = pid_m * BLOCK_M
    q_block_idx = start_m // BLOCK
    row = off_h * table_row_stride + q_block_idx    # table_row_stride = nq (per-head) or 0
    lo = tl.load(fwd_ptr + row)
    hi = tl.load(fwd_ptr + row + 1)
    n_full = tl.load(fwd_nfull + row)

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    row_ok = offs_m < seq_len
    d_ok = offs_d < HEAD_DIM

    Q_head = Q + off_b.to(tl.int64) * stride_qb + off_h.to(tl.int64) * stride_qh
    K_head = _head_base(K, off_b, off_kvh, stride_kb, stride_kh, USE_TMA)
    V_head = _head_base(V, off_b, off_kvh, stride_vb, stride_vh, USE_TMA)
    q_ptrs = Q_head + start_m.to(tl.int64) * stride_qm \
        + tl.arange(0, BLOCK_M)[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = _load_tile(q_ptrs, row_ok, d_ok, True, PAD_D)              # [BLOCK_M, D]

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)

    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K_head, V_head, off_b, off_kvh, fwd_idx,
                               lo * SUB, (lo + n_full) * SUB, offs_m, offs_n, offs_d,
                               stride_kn, stride_kd, stride_vn, stride_vd,
                               qk_scale, seq_len, kv_len,
                               BLOCK, BLOCK_N, HEAD_DIM, HEAD_DIM_PAD,
                               False, CAUSAL, UPCAST, PRECISION, USE_TMA)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K_head, V_head, off_b, off_kvh, fwd_idx,
                               (lo + n_full) * SUB, hi * SUB, offs_m, offs_n, offs_d,
                               stride_kn, stride_kd, stride_vn, stride_vd,
                               qk_scale, seq_len, kv_len,
                               BLOCK, BLOCK_N, HEAD_DIM, HEAD_DIM_PAD,
                               True, CAUSAL, UPCAST, PRECISION, USE_TMA)

    # rows that saw no key: output 0, lse -inf
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)

    o_ptrs = Out + off_b.to(tl.int64) * stride_ob + off_h.to(tl.int64) * stride_oh \
        + start_m.to(tl.int64) * stride_om \
        + tl.arange(0, BLOCK_M)[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    lse_ptrs = LSE + pid_bh.to(tl.int64) * seq_len + offs_m       # LSE is (B, H, N) contiguous
    tl.store(lse_ptrs, lse, mask=row_ok)
