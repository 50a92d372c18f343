"""Tile helpers shared by the kernels (pure ``@triton.jit`` code): loads, the table walk,
a program's sequence geometry, the token rule of masked tiles, score modifiers and dropout.

Named constants: ``LN2`` turns log2-domain statistics into natural log, ``LOG2E`` (1 / ln 2)
folds into the softmax scale so the kernels exponentiate with ``exp2``.
"""
import triton
import triton.language as tl

LN2 = tl.constexpr(0.6931471805599453)      # ln 2: log2-domain statistics to natural log
LOG2E = tl.constexpr(1.4426950408889634)    # 1 / ln 2


@triton.jit
def _dot(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # UPCAST (the interpreter): float64 products, rounded once to float32. Triton 3.6's
    # interpreter multiplies bf16 operands wrongly, and its float32 dots go to the CPU's BLAS,
    # whose rounding can differ between q k^T and its transpose k q^T: the backward would
    # then recompute other scores than the forward's, which a peaked softmax (scale 1e8)
    # turns into wrong probabilities. Summed in float64, both orders round alike.
    if UPCAST:
        out = tl.dot(a.to(tl.float64), b.to(tl.float64), input_precision="ieee").to(tl.float32)
        if acc is None:
            return out
        else:
            return acc + out
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
def _sequence(seqs, ts, q_len, k_len, q_pos, k_pos, nq, nk, PER_SEQ: tl.constexpr):
    """Geometry of table sequence ``ts``: (q_start, q_len, k_start, k_len, q_pos, k_pos,
    row_off, col_off, nq, nk), the columns of BlockLayout.seqs. One sequence shared by the
    batch passes them as scalars (no loads); several read their row of ``seqs``."""
    if PER_SEQ:
        row = seqs + ts * 10
        return (tl.load(row), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3),
                tl.load(row + 4), tl.load(row + 5), tl.load(row + 6), tl.load(row + 7),
                tl.load(row + 8), tl.load(row + 9))
    else:
        zero = tl.program_id(0) * 0
        return zero, q_len + zero, zero, k_len + zero, q_pos + zero, k_pos + zero, zero, zero, \
            nq + zero, nk + zero


@triton.jit
def _visible(rows_pos, cols_pos, row_ok, col_ok, window_left, window_right,
             CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr):
    """Token rule of a masked tile, ``[len(rows_pos), len(cols_pos)]``: both tokens present,
    key not after the query (causal), key inside the query's window."""
    visible = row_ok[:, None] & col_ok[None, :]
    if CAUSAL:
        visible = visible & (cols_pos[None, :] <= rows_pos[:, None])
    if HAS_WL:
        visible = visible & (cols_pos[None, :] >= rows_pos[:, None] - window_left)
    if HAS_WR:
        visible = visible & (cols_pos[None, :] <= rows_pos[:, None] + window_right)
    return visible


@triton.jit
def _key_ok(KPM, kpm_row, k_row0, cols_pos, col_ok, HAS_KPM: tl.constexpr):
    """Keys present in the sequence and not padding (``KPM``: int8 [B, kv_len], 1 = keep)."""
    if HAS_KPM:
        keep = tl.load(KPM + kpm_row + (cols_pos + k_row0), mask=col_ok, other=0)
        return col_ok & (keep != 0)
    else:
        return col_ok


@triton.jit
def _tanh(x, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """tanh: ``tanh.approx.f32`` (one MUFU op, flash-attn's softcap uses it too) for 16-bit
    inputs on the GPU; for fp32 inputs and in the interpreter, ``1 - 2 / (e^(2x) + 1)`` (exact
    limits +-1 for large |x|, no NaN)."""
    if PRECISION == "ieee":
        return 1.0 - 2.0 / (tl.math.exp2(x * (2.0 * LOG2E)) + 1.0)
    elif UPCAST:
        return 1.0 - 2.0 / (tl.math.exp2(x * (2.0 * LOG2E)) + 1.0)
    else:
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)


@triton.jit
def _softcap_shift(softcap2):
    """The fixed shift of the folded softcap's softmax (the forwards' FIXED, HAS_SOFTCAP 12;
    launch._softcap_shift_bounded says where it applies). With the scores bounded by the cap,
    ``|softcap2 * tanh| <= softcap2`` (log2 units), the shift ``softcap2 - HI``, HI =
    clamp(2 softcap2 - 100, 16, 64), puts every exponential in [2^(HI - 2 softcap2), 2^HI]:
    normal numbers in fp32 and bfloat16 while 2 softcap2 <= launch._SOFTCAP_SHIFT_SPAN (180),
    so the softmax needs no running row max and no rescale."""
    return softcap2 - tl.minimum(tl.maximum(2.0 * softcap2 - 100.0, 16.0), 64.0)


@triton.jit
def _log2_scores(qk, qk_scale, softcap2, alibi2, t_ref, t_pos, u_pos,
                 HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
                 UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """Scores in the kernel's units (log2, or natural when NATURAL): ``scale * q.k``,
    soft-capped (``softcap * tanh(s / softcap)``, here with ``softcap2 = softcap * unit``),
    plus the ALiBi bias (``alibi2 = slope * unit``). Also returns d(capped score)/d(score),
    ``1 - tanh^2`` from the same tanh, for the backward (1.0 without softcap).

    HAS_SOFTCAP 1: ``qk_scale = scale * unit``, the tanh argument ``s2 * (1 / softcap2)``.
    HAS_SOFTCAP 2 (folded): the host passes ``qk_scale = scale / softcap`` (the tanh argument
    in one multiply; the launcher folds it): ``s2 = softcap2 * tanh(qk * qk_scale)``.
    HAS_ALIBI 1: ``-alibi2 * |t - u|`` (``t_pos``/``u_pos`` broadcast to the tile, converted to
    float before they broadcast: a subtract, an abs and an FMA per score).
    HAS_ALIBI 2 (causal layouts only: every visible key has u <= t): ``-slope*|t - u| =
    slope*(u - R) - slope*(t - R)`` for a reference position R (``t_ref``, a scalar: the
    query tile's first position; ``t_pos`` is then unused); the row term is the same for every key of the row, so the
    softmax does not see it: only the column term ``alibi2 * (u - R)`` (one vector per tile,
    one add per score, contracted with the scale multiply) is added here, and the callers move
    the row term into the LSE (forward) or out of it (backward). Relative to R, the terms stay
    small where they matter (float32-exact positions up to 2**24)."""
    if HAS_SOFTCAP == 2:
        t = _tanh(qk * qk_scale, UPCAST, PRECISION)
        s2 = softcap2 * t
        dcap = 1.0 - t * t
    elif HAS_SOFTCAP:
        s2 = qk * qk_scale
        t = _tanh(s2 * (1.0 / softcap2), UPCAST, PRECISION)          # a multiply, not a divide
        s2 = softcap2 * t
        dcap = 1.0 - t * t
    else:
        s2 = qk * qk_scale
        dcap = 1.0
    if HAS_ALIBI == 2:
        s2 = s2 + alibi2 * (u_pos - t_ref).to(tl.float32)
    elif HAS_ALIBI:
        s2 = s2 - alibi2 * tl.abs(t_pos.to(tl.float32) - u_pos.to(tl.float32))
    return s2, dcap


@triton.jit
def _column_split_scores(qk, qk_scale, softcap2, alibi2, acol, start_n, t_ref,
                         HAS_SOFTCAP: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """The causal ALiBi's scores (HAS_ALIBI 2) for the loops over key tiles whose rows are
    queries: its column term ``alibi2 * (u - R)`` split once more, into ``acol = alibi2 * (u -
    start_n)`` (``[BLOCK_N]``, the same at every step: the caller makes it once before its loop
    and it is added with the scale's FMA) and the step's scalar ``shift = alibi2 * (start_n -
    R)``, left out of the scores: the forwards add it to the row max and take it off that max
    inside exp, the dQ kernel takes it off lse2 (per row, not per score). Returns the scores
    without the shift, the shift, and ``dcap`` as ``_log2_scores`` gives it."""
    s2, dcap = _log2_scores(qk, qk_scale, softcap2, alibi2, t_ref, t_ref, t_ref, HAS_SOFTCAP, 0,
                            UPCAST, PRECISION)
    return s2 + acol[None, :], alibi2 * (start_n - t_ref).to(tl.float32), dcap


@triton.jit
def _exp(x, NATURAL: tl.constexpr):
    """e^x for natural-unit scores (NATURAL), else 2^x for log2-unit ones."""
    if NATURAL:
        return tl.exp(x)
    else:
        return tl.math.exp2(x)


@triton.jit
def _piece(r, b: tl.constexpr, BITS: tl.constexpr):
    """Draw ``b`` (``BITS`` wide) of the 32-bit Philox output ``r``."""
    return (r >> (BITS * b)) & ((1 << BITS) - 1)


@triton.jit
def _word_pieces(r, BITS: tl.constexpr):
    """The draws of one 32-bit output along new trailing axes: ``[..., 2]`` (16-bit: draw
    ``h``) or ``[..., 2, 2]`` (8-bit: draw ``x + 2 y`` at ``[..., x, y]``)."""
    if BITS == 16:
        return tl.join(_piece(r, 0, BITS), _piece(r, 1, BITS))
    else:
        return tl.join(tl.join(_piece(r, 0, BITS), _piece(r, 1, BITS)),
                       tl.join(_piece(r, 2, BITS), _piece(r, 3, BITS)))


@triton.jit
def _keep(seed, rng_offset, bh, start_m, q_row0, u0, threshold, BLOCK_M: tl.constexpr,
          BLOCK_N: tl.constexpr, VARIANT: tl.constexpr):
    """Dropout's keep mask ``[BLOCK_M, BLOCK_N]`` of the queries at positions ``start_m + [0,
    BLOCK_M)`` (``start_m % BLOCK_M == 0``; tensor rows ``q_row0`` further) against key positions
    ``u0 + [0, BLOCK_N)`` (``u0 % BLOCK_N == 0``): kept where the ``BITS``-wide draw is >=
    ``threshold``. The torch backend draws the same bits (``sparseflash.philox``, whose
    ``DROPOUT_*`` settings pick BITS, the mapping and ROUNDS).

    QUAD (``DROPOUT_MAPPING = "quad"``), 16-bit: the call with counter ``((k // 16) * 8 + k % 8,
    R, bh, offset)`` serves queries {p, p+1, p+8, p+9} (positions, p % 16 in {0, 2, 4, 6}; R the
    tensor row of p) against keys {k, k+8} (k % 16 < 8): query p + y + 8z against key k + 8x
    takes half z of output 2y + x. 8-bit: the call with counter ``((k // 16) * 4 + (k % 16) //
    2, R, bh, offset)`` serves the same queries against keys {k, k+1, k+8, k+9} (k % 16 in {0, 2,
    4, 6}): query p + y + 8z against key k + x + 8v takes byte v + 2z of output 2y + x. Tiles of
    at least 16 a side draw by calls (the reshapes below); smaller ones element by element (one
    call per score, same bits).

    MMA (``DROPOUT_MAPPING = "mma"``): key ``u = c*CH + n*8 + t*2 + h`` takes draw ``2n + h``
    of the call with counter ``(c*4 + t, row, bh, offset)``, CH = 32 (16-bit, 8 draws a call)
    or 64 (8-bit, 16 a call). These are exactly the keys (h: 2 adjacent, n: every 8th) one
    thread holds in an MMA accumulator row, so the joins/permutes below are register
    relabelings the compiler folds into the accumulator's layout: the calls are computed in
    that layout, no shared-memory conversion (checked on the sm_90 TTGIR). Tiles narrower than
    CH draw element by element (one call per score, same bits).

    Otherwise (16-bit "interleave"): one call, counter ``(u // 8, row, bh, offset)``, serves
    eight keys, key u taking half ``u % 2`` of output ``(u % 8) // 2``.

    ``VARIANT = BITS * 1000 + MMA * 100 + ROUNDS`` (the kernels' HAS_DROPOUT constexpr,
    ``kernels.launch._dropout_code``)."""
    BITS: tl.constexpr = VARIANT // 1000
    MMA: tl.constexpr = (VARIANT // 100) % 10 == 1
    QUAD: tl.constexpr = (VARIANT // 100) % 10 == 2
    ROUNDS: tl.constexpr = VARIANT % 100
    q_rows = start_m + q_row0 + tl.arange(0, BLOCK_M)
    if QUAD:
        PAIRS: tl.constexpr = BITS // 2           # calls a 16-key block: 8 (16-bit) or 4 (8-bit)
        if (BLOCK_M % 16 == 0) and (BLOCK_N % 16 == 0):
            A: tl.constexpr = BLOCK_M // 16
            KB: tl.constexpr = BLOCK_N // 16
            gi = tl.arange(0, 4 * A)                                       # 4a + r: row pairs
            gk = tl.arange(0, PAIRS * KB)                                  # key pairs
            c0 = (u0 // 16) * PAIRS + gk[None, :] + gi[:, None] * 0        # [4A, PAIRS KB]
            c1 = (start_m + q_row0 + (gi // 4) * 16 + (gi % 4) * 2)[:, None] + gk[None, :] * 0
            r0, r1, r2, r3 = tl.philox(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS)
            # 16-bit [.., z, x, y]: half z of word 2y + x; 8-bit [.., v, z, x, y]: byte v + 2z
            x = tl.join(tl.join(_word_pieces(r0, BITS), _word_pieces(r1, BITS)),
                        tl.join(_word_pieces(r2, BITS), _word_pieces(r3, BITS)))
            if BITS == 16:
                # [a, r, b, k, z, x, y] -> [a, z, r, y, b, x, k]: query 16a + 8z + 2r + y,
                # key 16b + 8x + k
                x = tl.permute(tl.reshape(x, (A, 4, KB, 8, 2, 2, 2)), (0, 4, 1, 6, 2, 5, 3))
            else:
                # [a, r, b, c, v, z, x, y] -> [a, z, r, y, b, v, c, x]: query 16a + 8z + 2r + y,
                # key 16b + 8v + 2c + x
                x = tl.permute(tl.reshape(x, (A, 4, KB, 4, 2, 2, 2, 2)), (0, 5, 1, 7, 2, 4, 3, 6))
            draws = tl.reshape(x, (BLOCK_M, BLOCK_N))
        else:
            pos = start_m + tl.arange(0, BLOCK_M)
            u = u0 + tl.arange(0, BLOCK_N)
            y = pos % 2
            z = (pos % 16) // 8
            if BITS == 16:
                pair = u % 8                           # k % 8 (keys k, k + 8)
                x_u = (u % 16) // 8
                piece = z[:, None]                     # half z
            else:
                pair = (u % 8) // 2                    # (k % 16) // 2 (keys k, k+1, k+8, k+9)
                x_u = u % 2
                piece = ((u % 16) // 8)[None, :] + 2 * z[:, None]   # byte v + 2z
            c0 = ((u // 16) * PAIRS + pair)[None, :] + pos[:, None] * 0
            c1 = (q_rows - y - 8 * z)[:, None] + u[None, :] * 0
            r0, r1, r2, r3 = tl.philox(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS)
            w = 2 * y[:, None] + x_u[None, :]
            word = tl.where(w == 0, r0, tl.where(w == 1, r1, tl.where(w == 2, r2, r3)))
            draws = (word >> (BITS * piece).to(tl.uint32)) & ((1 << BITS) - 1)
    elif MMA:
        PER: tl.constexpr = 128 // BITS            # draws per call: 8 or 16
        CH: tl.constexpr = 4 * PER                 # keys per chunk of 4 calls: 32 or 64
        if BLOCK_N >= CH:
            C: tl.constexpr = BLOCK_N // CH
            g = (u0 // CH) * 4 + tl.arange(0, 4 * C)                       # [4C]: c*4 + t
            c0 = g[None, :] + q_rows[:, None] * 0                          # [BLOCK_M, 4C]
            c1 = q_rows[:, None] + g[None, :] * 0
            r0, r1, r2, r3 = tl.philox(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS)
            # word w of the call holds draws [w*32/BITS, (w+1)*32/BITS): axes [.., pieces.., w0, w1]
            x = tl.join(tl.join(_word_pieces(r0, BITS), _word_pieces(r1, BITS)),
                        tl.join(_word_pieces(r2, BITS), _word_pieces(r3, BITS)))
            if BITS == 16:
                # [M, 4C, h, n0, n1] -> [M, C, n1, n0, t, h]
                x = tl.reshape(x, (BLOCK_M, C, 4, 2, 2, 2))
                x = tl.permute(x, (0, 1, 5, 4, 2, 3))
            else:
                # draw 4w + x + 2y = 2n + h: h = x, n = y + 2 w0 + 4 w1
                x = tl.reshape(x, (BLOCK_M, C, 4, 2, 2, 2, 2))
                x = tl.permute(x, (0, 1, 6, 5, 4, 2, 3))
            draws = tl.reshape(x, (BLOCK_M, BLOCK_N))
        else:
            u = u0 + tl.arange(0, BLOCK_N)
            cnt = (u // CH) * 4 + (u % 8) // 2
            j = 2 * ((u % CH) // 8) + u % 2
            c0 = cnt[None, :] + q_rows[:, None] * 0
            c1 = q_rows[:, None] + cnt[None, :] * 0
            r0, r1, r2, r3 = tl.philox(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS)
            PW: tl.constexpr = 32 // BITS
            w = (j // PW)[None, :]
            word = tl.where(w == 0, r0, tl.where(w == 1, r1, tl.where(w == 2, r2, r3)))
            draws = (word >> (BITS * (j % PW))[None, :].to(tl.uint32)) & ((1 << BITS) - 1)
    else:
        G: tl.constexpr = BLOCK_N // 8
        g = u0 // 8 + tl.arange(0, G)                                     # [G]
        c0 = g[None, :] + q_rows[:, None] * 0                              # [BLOCK_M, G]
        c1 = q_rows[:, None] + g[None, :] * 0
        c2 = c0 * 0 + bh
        c3 = c0 * 0 + rng_offset
        r0, r1, r2, r3 = tl.philox(seed, c0, c1, c2, c3, ROUNDS)
        # interleave the eight 16-bit draws per call: column 8 * g + j gets draw j
        lo = tl.join(tl.join(r0 & 0xFFFF, r2 & 0xFFFF), tl.join(r1 & 0xFFFF, r3 & 0xFFFF))
        hi = tl.join(tl.join(r0 >> 16, r2 >> 16), tl.join(r1 >> 16, r3 >> 16))
        draws = tl.reshape(tl.join(lo, hi), (BLOCK_M, BLOCK_N))
    return draws >= threshold.to(tl.uint32)


@triton.jit
def _alibi2(ALIBI, off_b, off_h, stride_alibi_b, HAS_ALIBI: tl.constexpr, NATURAL: tl.constexpr):
    """This head's ALiBi slope in the scores' units (log2, or natural when NATURAL; 0 without ALiBi)."""
    if HAS_ALIBI:
        slope = tl.load(ALIBI + off_b.to(tl.int64) * stride_alibi_b + off_h)
        if NATURAL:
            return slope
        else:
            return slope * LOG2E
    else:
        return 0.0


@triton.jit
def _slot_sequence(slot, PER_SEQ: tl.constexpr, PACKED: tl.constexpr):
    """(table sequence, batch index) of grid slot ``slot``: a batch element, or a document of
    the one batch row when PACKED."""
    if PER_SEQ:
        ts = slot
    else:
        ts = slot * 0
    if PACKED:
        off_b = slot * 0
    else:
        off_b = slot
    return ts, off_b


@triton.jit
def _query_tile(seqs, ts, pid_m, q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1, off_h,
                BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, PER_SEQ: tl.constexpr):
    """Sequence geometry of a query-tile program and the table row it walks. Tiles are
    aligned to absolute positions (``BLOCK_M`` divides ``BLOCK``), so a tile lies in one
    query block; tile ``pid_m`` is the pid_m-th tile holding one of the sequence's queries.
    Returns (q_start, q_pos, q_end, k_start, k_pos, k_end, start_m, row, tile_ok, nk, col_off)
    with ``start_m`` the tile's first absolute position."""
    q_start, q_len, k_start, k_len, q_pos, k_pos, row_off, col_off, nq, nk = _sequence(
        seqs, ts, q_len, k_len, q_pos, k_pos, nq, nk, PER_SEQ)
    start_m = (q_pos // BLOCK_M + pid_m) * BLOCK_M
    tile_ok = start_m < q_pos + q_len
    row = row_off + off_h * table_heads_gt1 * nq + start_m // BLOCK - q_pos // BLOCK
    row = tl.where(tile_ok, row, 0)
    return q_start, q_pos, q_pos + q_len, k_start, k_pos, k_pos + k_len, start_m, row, tile_ok, nk, col_off
