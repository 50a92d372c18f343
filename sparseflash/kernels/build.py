"""Block-table build kernels for device-built layouts (pure ``@triton.jit`` code).

They build the tables of :class:`sparseflash.layout.BlockLayout` from a block mask or from
top-k selection over block scores, exactly as the torch chain of :mod:`sparseflash.dynamic`
does (the launcher, ``build_tables`` there, calls them in this order):

1. ``_rows_kernel``: one program per ``ROWS`` query-block rows of one (table sequence,
   head). Picks the row's kept blocks (the mask's, or the top-k visible ones plus
   ``include``'s) and writes them as a bitmask (``W = NK_PAD // 32`` int32 words per row,
   bit ``j % 32`` of word ``j // 32`` keeps local key block j), with the row's count and
   full count. Blocks above the causal line are never read.
2. ``_transpose_kernel``: one program per 32 key blocks (one bitmask word) of one (table
   sequence, head): the transposed bitmask (``WQ = NQ_PAD // 32`` words per key block)
   and each key block's count and full count.
3. (the launcher: row and column pointers as prefix sums of the counts)
4. ``_compact_kernel``, once per direction: bitmask rows to CSR entries, full blocks first,
   each part ascending. Its work is per word and per set bit (a word's first slot is a
   prefix sum of popcounts, and each step writes every word's lowest remaining bit), not
   per bit position, so a row of 512 key blocks with 20 kept costs about 40 word steps.

No atomics: every entry's position is a prefix sum over one row or one column, so the
tables are deterministic.

Top-k order: descending score, ties to the lower key block (what ``torch.argsort(-s,
stable=True)`` gives); ``-inf`` never selected. The selection is ``K`` rounds of arg-max
over per-group maxima: the row is split into ``G`` groups of ``GS`` blocks, each round
takes the best group's best block and refreshes only that group (its ``GS`` scores are
re-read, L1/L2-resident), so a round costs ``G + GS`` comparisons, not ``NK_PAD``.
"""
import triton
import triton.language as tl


@triton.jit
def _or(a, b):
    return a | b


@triton.jit
def _popcount(x):
    # SWAR bit count of int32 words; the masks clear what arithmetic shifts drag in
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    x = x + (x >> 8)
    x = x + (x >> 16)
    return x & 0x3F


@triton.jit
def _pack(bits, ROWS: tl.constexpr, W: tl.constexpr):
    """int32 words ``[ROWS, W]`` of a 0/1 int32 tile ``[ROWS, W * 32]``."""
    b = tl.reshape(bits, (ROWS, W, 32))                                  # [ROWS, W, 32]
    return tl.reduce(b << tl.arange(0, 32)[None, None, :], 2, _or)       # [ROWS, W]


@triton.jit
def _load_row(src_row, classes_ptr, i, row_ok, nk, stride_k, cols, UPCAST: tl.constexpr,
              GATED: tl.constexpr):
    """Scores of key blocks ``cols`` (``[ROWS, C]``) of ``ROWS`` rows, ``-inf`` where not
    visible. GATED: the scores' load waits for the classes' and never reads those above the
    causal line (the first pass, most of the row); otherwise both loads issue at once (the
    rounds' short refreshes, where the second load's latency is what counts)."""
    m2 = row_ok[:, None] & (cols < nk)
    cls = tl.load(classes_ptr + i[:, None] * nk + cols, mask=m2, other=0)
    x = tl.load(src_row[:, None] + cols * stride_k, mask=(cls > 0) if GATED else m2, other=float("-inf"))
    if UPCAST:
        x = x.to(tl.float32)                                             # exact for fp16 / bf16
    if not GATED:
        x = tl.where(cls > 0, x, float("-inf"))
    return x


@triton.jit
def _rows_kernel(src_ptr, classes_ptr, vis_ptr, full_ptr, inc_ptr, bits_ptr, count_ptr, nfull_ptr,
                 stride_s, stride_h, stride_q, stride_k, inc_stride_h,
                 TH, nq, nk, K,
                 NK_PAD: tl.constexpr, W: tl.constexpr, ROWS: tl.constexpr, GS: tl.constexpr,
                 TOPK: tl.constexpr, HAS_INCLUDE: tl.constexpr, UPCAST: tl.constexpr):
    # grid: (cdiv(nq, ROWS), S * TH). src is the mask (uint8) or the scores, indexed
    # [s, h, i, j] by strides (stride_h 0 when one head of src serves every table head).
    G: tl.constexpr = NK_PAD // GS
    st = tl.program_id(1)
    s = st // TH
    th = st % TH
    i = tl.program_id(0) * ROWS + tl.arange(0, ROWS)                    # [ROWS] local rows
    row_ok = i < nq
    wcol = tl.arange(0, W)                                               # [W]
    wmask = row_ok[:, None] & (wcol[None, :] < W)
    src_row = src_ptr + s.to(tl.int64) * stride_s + th.to(tl.int64) * stride_h + i.to(tl.int64) * stride_q
    vis = tl.load(vis_ptr + i[:, None] * W + wcol[None, :], mask=wmask, other=0)   # [ROWS, W]
    if TOPK:
        gcol = tl.arange(0, G)                                           # [G]
        gs = tl.arange(0, GS)                                            # [GS]
        cols = tl.arange(0, NK_PAD)[None, :]                             # [1, NK_PAD]
        x = _load_row(src_row, classes_ptr, i, row_ok, nk, stride_k, cols, UPCAST, True)
        keep = tl.zeros((ROWS, W), dtype=tl.int32)
        gmax, garg = tl.max(tl.reshape(x, (ROWS, G, GS)), 2, return_indices=True,
                            return_indices_tie_break_left=True)          # [ROWS, G]
        garg = gcol[None, :] * GS + garg                                 # key block of each group's best
        for _ in range(K):
            m, g = tl.max(gmax, 1, return_indices=True, return_indices_tie_break_left=True)  # [ROWS]
            hit = gcol[None, :] == g[:, None]                            # [ROWS, G]
            j = tl.sum(tl.where(hit, garg, 0), 1)                        # [ROWS] the round's block
            ok = m > float("-inf")
            bit = tl.where(ok, 1, 0) << (j % 32)
            keep = tl.where(wcol[None, :] == (j // 32)[:, None], keep | bit[:, None], keep)
            # refresh group g with the blocks after (m, j) in the order: exactly those
            # not taken yet, since rounds take blocks in that order
            c = g[:, None] * GS + gs[None, :]                            # [ROWS, GS]
            y = _load_row(src_row, classes_ptr, i, row_ok, nk, stride_k, c, UPCAST, False)
            after = (y < m[:, None]) | ((y == m[:, None]) & (c > j[:, None]))
            y = tl.where(after, y, float("-inf"))                        # [ROWS, GS]
            nm, na = tl.max(y, 1, return_indices=True, return_indices_tie_break_left=True)
            gmax = tl.where(hit, nm[:, None], gmax)
            garg = tl.where(hit, (g * GS + na)[:, None], garg)
    else:
        cols = tl.arange(0, NK_PAD)                                      # [NK_PAD]
        m2 = row_ok[:, None] & (cols[None, :] < nk)
        b = tl.load(src_row[:, None] + cols[None, :] * stride_k, mask=m2, other=0)
        keep = _pack((b != 0).to(tl.int32), ROWS, W)                     # [ROWS, W]
    if HAS_INCLUDE:
        keep = keep | tl.load(inc_ptr + th * inc_stride_h + i[:, None] * W + wcol[None, :],
                              mask=wmask, other=0)
    keep = keep & vis                                                    # blocks with no visible pair are never stored
    full = tl.load(full_ptr + i[:, None] * W + wcol[None, :], mask=wmask, other=0)
    r = st * nq + i                                                      # [ROWS] table rows
    tl.store(bits_ptr + r.to(tl.int64)[:, None] * W + wcol[None, :], keep, mask=wmask)
    tl.store(count_ptr + r, tl.sum(_popcount(keep), 1), mask=row_ok)
    tl.store(nfull_ptr + r, tl.sum(_popcount(keep & full), 1), mask=row_ok)


@triton.jit
def _low_bit_index(low):
    """Index of the single set bit of each int32 word ``low`` (a power of two, bit 31
    included): the exponent of its exact float32 value."""
    return (low.to(tl.uint32).to(tl.float32).to(tl.int32, bitcast=True) >> 23) - 127


@triton.jit
def _write_bits(base, slot, x, col0, cnt):
    """The set bits of words ``x`` (popcounts ``cnt``) as entries ``col0 + bit``, ascending,
    each word's from ``base + slot`` on: each step writes every word's lowest remaining bit
    (so the steps are the most bits of any word, not the bit positions). Both compaction
    kernels' inner loop: this one passes a pointer per word and slot 0, kernels/build_gluon.py
    the table and int32 slots (fewer registers than 64-bit pointers there)."""
    for t in range(0, tl.max(tl.max(cnt, 1), 0)):
        low = x & -x
        tl.store(base + (slot + t), col0 + _low_bit_index(low), mask=x != 0)
        x = x ^ low


@triton.jit
def _compact_kernel(bits_ptr, full_ptr, ptr_ptr, nfull_ptr, idx_ptr, n, n_words,
                    W: tl.constexpr, ROWS: tl.constexpr):
    # grid: (cdiv(n, ROWS), S * TH). Rows r = st * n + i of a bitmask (W int32 words per
    # row, the first n_words of them written; full_ptr: the static full-block words [n, W]
    # of local row i) become CSR entries
    # from ptr[r]: the full blocks ascending, then the partial ones. Work is per word and
    # per set bit, not per bit position: word offsets are prefix sums of popcounts, and
    # each step writes every word's lowest remaining set bit.
    st = tl.program_id(1)
    i = tl.program_id(0) * ROWS + tl.arange(0, ROWS)                    # [ROWS]
    row_ok = i < n
    r = st.to(tl.int64) * n + i
    wcol = tl.arange(0, W)                                               # [W]
    wmask = row_ok[:, None] & (wcol[None, :] < n_words)
    words = tl.load(bits_ptr + r[:, None] * W + wcol[None, :], mask=wmask, other=0)
    fullw = tl.load(full_ptr + i[:, None] * W + wcol[None, :], mask=wmask, other=0)
    start = tl.load(ptr_ptr + r, mask=row_ok, other=0).to(tl.int64)
    nfull = tl.load(nfull_ptr + r, mask=row_ok, other=0).to(tl.int64)
    for part in tl.static_range(2):
        if part == 0:
            x = words & fullw
            row0 = start
        else:
            x = words & ~fullw
            row0 = start + nfull
        cnt = _popcount(x)                                               # [ROWS, W]
        dst = idx_ptr + row0[:, None] + (tl.cumsum(cnt, 1) - cnt)        # each word's first slot
        _write_bits(dst, 0, x, wcol[None, :] * 32, cnt)


@triton.jit
def _transpose_kernel(bits_ptr, full_t_ptr, bits_t_ptr, count_ptr, nfull_ptr, nq, nk,
                      W: tl.constexpr, WQ: tl.constexpr, QW: tl.constexpr):
    # grid: (W, S * TH). Program (w, st) owns key blocks [32 w, 32 w + 32) of table
    # sequence and head st: it reads that bitmask word of every query row, 32 QW rows per
    # step, and writes the transposed words (bit q % 32 of word q // 32 of key block j's
    # row, WQ words per row) with each key block's count and full count.
    w = tl.program_id(0)
    st = tl.program_id(1)
    lane = tl.arange(0, 32)                                              # [32] key blocks
    j = w * 32 + lane
    c = st.to(tl.int64) * nk + j                                         # [32] transposed rows
    j_ok = j < nk
    qbit = tl.arange(0, 32)
    qw = tl.arange(0, QW)                                                # [QW]
    count = tl.zeros((32,), dtype=tl.int32)
    nfull = tl.zeros((32,), dtype=tl.int32)
    for q0 in range(0, nq, 32 * QW):
        q = q0 + tl.arange(0, 32 * QW)                                   # [32 QW]
        words = tl.load(bits_ptr + (st.to(tl.int64) * nq + q) * W + w, mask=q < nq, other=0)
        b = tl.reshape((words[:, None] >> lane[None, :]) & 1, (QW, 32, 32))   # [word, q bit, key]
        packed = tl.reduce(b << qbit[None, :, None], 1, _or)             # [QW, 32]
        wq = q0 // 32 + qw                                               # [QW] word columns
        m = (wq < WQ)[:, None] & j_ok[None, :]
        tl.store(bits_t_ptr + c[None, :] * WQ + wq[:, None], packed, mask=m)
        fw = tl.load(full_t_ptr + j[None, :] * WQ + wq[:, None], mask=m, other=0)
        count += tl.sum(_popcount(packed), 0)
        nfull += tl.sum(_popcount(packed & fw), 0)
    tl.store(count_ptr + c, count, mask=j_ok)
    tl.store(nfull_ptr + c, nfull, mask=j_ok)
