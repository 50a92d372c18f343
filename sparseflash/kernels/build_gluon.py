"""The table-build kernels for sm_90 GPUs in Gluon: top-k rows, transpose, compaction.

``kernels/build.py``'s ``tl`` kernels leave the layout of their tiles to Triton. Its top-k row
kernel selects with rounds of arg-max over group maxima, and each round's reductions ran
across threads (shuffles, shared-memory layout conversions): an H200 spent 0.19 ms on it at
8 x 32 heads x 512 x 512 blocks, k = 16, bound by instructions (ncu: 88% SM throughput), not
by reading the scores. Here the layouts are written out, and the instruction count per
round is what the design minimises (counted in the sm_90 SASS, then timed on an H200; see
``benchmarks/results/h200-dynamic-layouts/RUNS.md``):

* ``_topk_rows_kernel``: ``BlockedLayout([1, V], [32 // TPR, TPR], [NUM_WARPS, 1])``, a row in
  ``TPR`` lanes (4 by default), its columns in their registers: a reduction over key blocks
  is in-register work plus log2(TPR) butterfly shuffles, and the group, bitmask and score
  tiles share one layout (no conversion). A group is a bitmask word: 32 key blocks. The
  first pass reads the row's visible prefix (``hi`` blocks, from the geometry: a row of a
  ``dense()`` grid sees a prefix of its key blocks) a group at a time, keeping each group's
  maximum and first arg-max; then ``K`` rounds take the best block (among the groups holding
  the best score the first one's block is the lowest: one reduction finds it), set its bit,
  and refresh its group from the blocks still available: the visible ones whose bit in the
  group's keep word is clear (one AND per score, where comparing (score, block) pairs with
  the round's took seven instructions). Ties: the lower group, in a group the lower block,
  the order of a stable descending sort. Rows past the grid recompute the last row (never
  stored) so that no load needs a row mask. Rows of more than 8192 key blocks take the
  ``tl`` kernel (the per-group state grows with the row; ``dynamic._GLUON_ROWS_MAX_NK``).
  On an H200 (8 x 32 x 512 x 512, k = 16, causal, fp32): 0.099 ms, against 0.122 with
  groups of ``GS`` blocks compared by (score, block) pairs and 0.189 for the ``tl`` kernel.
  Two lanes per row issue fewer instructions (227 against 133 per round, for twice the
  rows) but were slower (0.118 ms): each load then touches twice the rows' lines.
* ``_transpose_kernel``: a lane per key block; 32 query rows' words are broadcast loads and
  each lane gathers its bit from them in registers (no shuffle, no shared memory).
* ``_compact_kernel``: a row in ``TW`` lanes (4 by default), each with ``W // TW`` words:
  each word's first slot is the prefix sum of the row's popcounts (in registers, then
  across the row's lanes), and each step writes every word's lowest remaining set bit, so
  a row's lanes write neighbouring slots together. 0.035 ms for both directions, against
  0.065 with a row per thread and 0.082 with a word per lane (16 lanes).

Popcounts are one ``popc`` instruction each (``gl.inline_asm_elementwise``). Inputs and
outputs are exactly those of the ``tl`` kernels (the launcher,
``sparseflash.dynamic._build_tables_impl``, picks these on sm_90 GPUs). Gluon has no
interpreter: they are tested on the GPU against the torch chain
(tests/test_dynamic_layouts.py), and the CPU suite compiles them to sm_90.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

# the compaction's bit-writing loop is build.py's own: a ``@triton.jit`` function, which a Gluon
# kernel calls like its own (the sm_90 code is the same as with the loop written out here)
from .build import _write_bits


@gluon.jit
def _best(x, col, NONE: gl.constexpr):
    """Each row's maximum of ``x`` ``[ROWS, C]`` and the first column ``col`` holding it."""
    m = gl.max(x, 1)
    return m, gl.min(gl.where(x == m[:, None], col, NONE), 1)


@gluon.jit
def _load(group_row, gs, stride_k, seen, EVEN: gl.constexpr, VIS: gl.constexpr):
    """Scores of a group's blocks ``gs`` (``[1, GS]``, local to the group) for the rows whose
    group starts at ``group_row`` (``[ROWS]`` pointers), float32; with VIS ``-inf`` past each
    row's ``seen`` visible blocks of the group. Every row pointer is valid (the caller clamps
    the rows past the grid), so with EVEN (``nk`` a power of two: no group passes the row's
    end) the load has no mask and its copies vectorise, visibility applied after; otherwise
    the load reads the visible blocks only (``seen`` never passes ``nk``)."""
    if EVEN:
        x = gl.load(group_row[:, None] + gs * stride_k)
        if VIS:
            x = gl.where(gs < seen[:, None], x.to(gl.float32), float("-inf"))
    else:
        x = gl.load(group_row[:, None] + gs * stride_k, mask=gs < seen[:, None], other=float("-inf"))
    return x.to(gl.float32)                                             # exact for fp16 / bf16


@gluon.jit
def _topk_rows_kernel(src_ptr, hi_ptr, vis_ptr, full_ptr, inc_ptr, bits_ptr, count_ptr, nfull_ptr,
                      stride_s, stride_h, stride_q, stride_k, inc_stride_h,
                      TH, nq, nk, K,
                      NK_PAD: gl.constexpr, W: gl.constexpr, V: gl.constexpr,
                      TPR: gl.constexpr, EVEN: gl.constexpr, HAS_INCLUDE: gl.constexpr,
                      NUM_WARPS: gl.constexpr):
    # grid: (cdiv(nq, 32 // TPR * NUM_WARPS), S * TH). src: the scores, indexed [s, h, i, j]
    # by strides (stride_h 0 when one head of scores serves every table head). hi: int32
    # [nq], row i's visible key blocks are [0, hi[i]).
    GS: gl.constexpr = 32                   # a group is a bitmask word's 32 key blocks
    ROWS: gl.constexpr = 32 // TPR * NUM_WARPS
    L: gl.constexpr = gl.BlockedLayout([1, V], [32 // TPR, TPR], [NUM_WARPS, 1], [1, 0])
    RL: gl.constexpr = gl.SliceLayout(1, L)
    CL: gl.constexpr = gl.SliceLayout(0, L)
    st = gl.program_id(1)
    s = st // TH
    th = st % TH
    i = gl.program_id(0) * ROWS + gl.arange(0, ROWS, RL)               # [ROWS] local rows
    row_ok = i < nq
    # rows past the grid compute row nq - 1 again (never stored): no load needs a row mask
    i_in = gl.minimum(i, nq - 1)
    src_row = src_ptr + s.to(gl.int64) * stride_s + th.to(gl.int64) * stride_h \
        + i_in.to(gl.int64) * stride_q                                  # [ROWS] row pointers
    hi = gl.load(hi_ptr + i_in)                                         # [ROWS]
    gs = gl.arange(0, GS, CL)[None, :]                                  # [1, GS] a group's blocks
    wcol = gl.arange(0, W, CL)[None, :]                                 # [1, W]

    # first pass: each group's best visible score and its first block
    gmax = gl.full([ROWS, W], float("-inf"), gl.float32, L)
    garg = gl.zeros([ROWS, W], gl.int32, L)
    n_groups = (gl.max(hi, 0) + GS - 1) // GS
    for g0 in range(0, n_groups):
        base = g0 * GS
        x = _load(src_row + base * stride_k, gs, stride_k, hi - base, EVEN, True)
        m, a = _best(x, gs, GS)
        hit = wcol == g0
        gmax = gl.where(hit, m[:, None], gmax)
        garg = gl.where(hit, (a + base)[:, None], garg)

    keep = gl.zeros([ROWS, W], gl.int32, L)
    for _ in range(K):
        m = gl.max(gmax, 1)                                             # [ROWS]
        # the round's block: the best group's first best block; groups are ascending
        # ranges, so among the groups holding m the first one's block is the lowest
        j = gl.min(gl.where(gmax == m[:, None], garg, NK_PAD), 1)       # [ROWS]
        # its group and word (clamped: a row of NaN scores matches no group, and its refresh
        # must still read inside the row; it sets no bit, NaN > -inf being false)
        g = gl.minimum(j // 32, W - 1)
        bit = gl.where(m > float("-inf"), 1, 0) << (j % 32)
        hit = wcol == g[:, None]                                        # [ROWS, W] (W == G)
        keep = gl.where(hit, keep | bit[:, None], keep)
        # refresh group g: its visible blocks not taken yet (the complement of its keep word)
        word = gl.reduce(gl.where(hit, keep, 0), 1, _or)                # [ROWS]
        base = g * 32
        seen = hi - base
        vis = gl.where(seen >= 32, -1, gl.where(seen > 0, (1 << gl.maximum(seen, 0)) - 1, 0))
        y = _load(src_row + base * stride_k, gs, stride_k, seen, EVEN, False)
        nm, na = _best(gl.where(((vis & ~word)[:, None] & (1 << gs)) != 0, y, float("-inf")), gs, 32)
        gmax = gl.where(hit, nm[:, None], gmax)
        garg = gl.where(hit, (na + base)[:, None], garg)

    wmask = row_ok[:, None] & (wcol < W)
    words = i[:, None] * W + wcol                                       # [ROWS, W]
    if HAS_INCLUDE:
        keep = keep | gl.load(inc_ptr + th * inc_stride_h + words, mask=wmask, other=0)
    keep = keep & gl.load(vis_ptr + words, mask=wmask, other=0)         # never a block with no visible pair
    full = gl.load(full_ptr + words, mask=wmask, other=0)
    r = st * nq + i                                                     # [ROWS] table rows
    gl.store(bits_ptr + r.to(gl.int64)[:, None] * W + wcol, keep, mask=wmask)
    gl.store(count_ptr + r, gl.sum(_popc(keep), 1), mask=row_ok)
    gl.store(nfull_ptr + r, gl.sum(_popc(keep & full), 1), mask=row_ok)


@gluon.jit
def _transpose_kernel(bits_ptr, full_t_ptr, bits_t_ptr, count_ptr, nfull_ptr, nq, nk,
                      W: gl.constexpr, WQ: gl.constexpr):
    # grid: (W, S * TH), one warp. Program (w, st) owns key blocks [32 w, 32 w + 32) of table
    # sequence and head st, one per lane. Per step it reads 32 query rows' word w (the same
    # addresses in every lane: one broadcast load each) and each lane gathers its key
    # block's bit from them, in registers: the transposed word (bit q % 32 of word q // 32
    # of key block j's row, WQ words per row), with the key block's count and full count.
    # Same outputs as kernels/build.py ``_transpose_kernel`` (``tl``), whose reductions over
    # the query bits cross threads.
    L: gl.constexpr = gl.BlockedLayout([32, 1], [1, 32], [1, 1], [0, 1])
    w = gl.program_id(0)
    st = gl.program_id(1)
    qbit = gl.arange(0, 32, gl.SliceLayout(1, L))[:, None]              # [32, 1] in every lane
    lane = gl.arange(0, 32, gl.SliceLayout(0, L))                       # [32] key blocks
    j = w * 32 + lane
    j_ok = j < nk
    c = st.to(gl.int64) * nk + j                                        # [32] transposed rows
    count = gl.zeros([32], gl.int32, gl.SliceLayout(0, L))
    nfull = gl.zeros([32], gl.int32, gl.SliceLayout(0, L))
    for qw in range(0, WQ):
        q = qw * 32 + qbit                                              # [32, 1]
        words = gl.load(bits_ptr + (st.to(gl.int64) * nq + q) * W + w, mask=q < nq, other=0)
        # the bits are disjoint, so their sum is their OR (bit 31 wraps to the sign bit)
        packed = gl.sum(((words >> lane[None, :]) & 1) << qbit, 0)      # [32] one word per lane
        tl_ok = j_ok & (qw * 32 < nq)
        gl.store(bits_t_ptr + c * WQ + qw, packed, mask=tl_ok)
        fw = gl.load(full_t_ptr + j * WQ + qw, mask=tl_ok, other=0)
        count += _popc(packed)
        nfull += _popc(packed & fw)
    gl.store(count_ptr + c, count, mask=j_ok)
    gl.store(nfull_ptr + c, nfull, mask=j_ok)


@gluon.jit
def _add(a, b):
    return a + b


@gluon.jit
def _or(a, b):
    return a | b


@gluon.jit
def _popc(x):
    """Set bits of each int32 word: one ``popc`` (``_popcount``'s SWAR sum is a dozen)."""
    return gl.inline_asm_elementwise("popc.b32 $0, $1;", "=r,r", [x], dtype=gl.int32,
                                     is_pure=True, pack=1)


@gluon.jit
def _compact_kernel(bits_ptr, full_ptr, ptr_ptr, nfull_ptr, idx_ptr, n, n_words,
                    W: gl.constexpr, TW: gl.constexpr, NUM_WARPS: gl.constexpr):
    # grid: (cdiv(n, 32 // TW * NUM_WARPS), S * TH). kernels/build.py ``_compact_kernel``
    # with a row in TW lanes (a word or more per lane): rows r = st * n + i of a bitmask (W
    # int32 words per row, the first n_words of them written; full_ptr: the static
    # full-block words [n, W] of local row i) become CSR entries from ptr[r], the full
    # blocks ascending, then the partial ones. A word's first slot is the prefix sum of the
    # row's popcounts (in registers and across the row's lanes), and each step writes every
    # word's lowest remaining set bit: the row's lanes write neighbouring slots together.
    ROWS: gl.constexpr = 32 // TW * NUM_WARPS
    L: gl.constexpr = gl.BlockedLayout([1, W // TW], [32 // TW, TW], [NUM_WARPS, 1], [1, 0])
    st = gl.program_id(1)
    i = gl.program_id(0) * ROWS + gl.arange(0, ROWS, gl.SliceLayout(1, L))   # [ROWS]
    row_ok = i < n
    r = st.to(gl.int64) * n + i
    wcol = gl.arange(0, W, gl.SliceLayout(0, L))[None, :]               # [1, W]
    wmask = row_ok[:, None] & (wcol < n_words)
    words = gl.load(bits_ptr + r[:, None] * W + wcol, mask=wmask, other=0)
    fullw = gl.load(full_ptr + i[:, None] * W + wcol, mask=wmask, other=0)
    # entry positions fit in int32 (the builders refuse larger tables): int32 slot offsets
    # instead of a 64-bit pointer per word keep the registers (and occupancy) down
    start = gl.load(ptr_ptr + r, mask=row_ok, other=0)
    nfull = gl.load(nfull_ptr + r, mask=row_ok, other=0)
    col0 = wcol * 32
    for part in gl.static_range(2):
        if part == 0:
            x = words & fullw
            row0 = start
        else:
            x = words & ~fullw
            row0 = start + nfull
        cnt = _popc(x)                                                  # [ROWS, W]
        slot = row0[:, None] + (gl.associative_scan(cnt, 1, _add) - cnt)   # each word's first slot
        _write_bits(idx_ptr, slot, x, col0, cnt)
