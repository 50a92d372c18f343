"""Hopper (sm_90) forward kernel in Gluon: warp-specialised, TMA-fed, wgmma block-sparse attention.

The portable ``tl`` kernels (fwd.py) leave the overlap of loads, matrix products and the
softmax to Triton's pipeliner. Here it is written out, as FlashAttention-3 does:

* a **producer warp** walks the query block's CSR row of the forward tables
  (:class:`sparseflash.layout.BlockLayout`) and issues TMA copies of each K and V tile into
  a ring of ``NUM_STAGES`` shared-memory slots, each with its own "ready" mbarrier, and
  waits on the slot's "empty" barrier before reusing it;
* two **consumer warpgroups** (4 warps each, 64 query rows each, in separate partitions so
  that they synchronise only through the ring and drift apart: one's softmax overlaps the
  other's matrix products) run ``S = Q K^T`` and ``O += P V`` as asynchronous
  ``warpgroup_mma``. ``P_{t-1} V_{t-1}`` is issued right after ``S_t`` and runs while the
  softmax of step ``t`` does (FA3's intra-warpgroup overlap); ``P`` feeds the second product
  from registers, never through shared memory. Both release a slot (count 2) after their
  ``P V`` has read it. With ``OVERLAP_PV`` (launch.py ``HOPPER_FWD_OVERLAP``, default at
  d=128) the softmax sits in a basic block of its own, without which ptxas hoists the wait for
  ``P_{t-1} V_{t-1}`` above the exponentials and the overlap is lost.

With ``NUM_CONSUMERS=3`` (launch.py ``HOPPER_FWD_CONSUMERS``; the default at d=64 on dense and
causal tables without options) three consumer warpgroups share a 192-query tile: each
64-query third lies inside one table block and walks its own row; the producer walks the
tile's longest row, of which the others are prefixes (launch.py ``_prefix_rows``), and a
warpgroup with a shorter row releases the remaining slots once their K has landed.

With ``PERSISTENT`` (launch.py ``HOPPER_PERSISTENT``; the default on short, even rows) the
grid is at most one CTA per SM and each walks every ``num_programs(0)``-th query tile in launch
order: the producer copies a tile's Q once both consumers have released the previous one
(``q_empty``), and the ring position carries across tiles, so a tile's output stores overlap
the next tile's copies. With ``DYNAMIC`` (launch.py ``HOPPER_DYNAMIC_TILES``; the default with
three consumers) a CTA takes each program after its first from a counter in global memory
instead, and publishes it to the consumers in shared memory beside the tile's Q (-1: none
left), so that uneven tiles balance.

Measured on an H200 (benchmarks/hopper.py, bf16, d=128, 16K): one partition of 8 warps ran
at 0.95x the portable kernel; two partitions with a 2-slot ring at 1.06x, with 3 slots at 1.18x
(614 TFLOP/s dense, 606 causal).

Semantics are the portable kernel's: softmax in base 2 (``qk_scale = scale * log2(e)``),
full blocks unmasked, partial blocks through the token rule (sequence bounds, causal line,
token windows, key padding), absolute positions and per-sequence tables (``seqs``), packed
documents, GQA, rows that see nothing give 0 and ``lse = -inf``. Tiles are 128 x 128 and
the layout's block size must be a multiple of 128. Softcap and ALiBi (both ``SOFTCAP_VARIANT``
and both ``ALIBI_VARIANT`` forms, ``(H,)`` or ``(B, H)`` slopes) are computed as the portable
kernels compute them (tiles.py ``_log2_scores`` itself: elementwise ``@triton.jit`` helpers are
called from these Gluon kernels like their own): the same constants, ``tanh.approx.f32`` (the
portable kernels' tanh for 16-bit inputs on the GPU), the folded softcap's row max over tanh
(or, the scores being bounded by the cap, a fixed shift in its place: ``_consume_tile``,
FIXED), the causal ALiBi's row term moved into the LSE, and in the dK/dV kernel dS times
``1 - tanh^2``. Dropout draws the portable kernels' bits (tiles.py ``_keep``; any Philox round count). In the "quad" mapping with 16-bit draws (the default) the
dK/dV kernel draws each call in the thread that holds its 8 scores (:func:`_quad_words_t`) and
the forward's lane pairs trade half the words (:func:`_quad_words`); with 8-bit draws the lane
pairs trade half the words in both kernels (:func:`_quad8_calls`, :func:`_quad8_words_t`). In the "mma" mapping (16-
or 8-bit) the forward computes the Philox calls in a layout whose threads hold exactly the keys
each call serves (:func:`_draw_layout`), so the draws reach the wgmma accumulator by register
relabeling; the dK/dV kernel draws them in the same orientation and transposes the mask through
shared memory.
The natural-unit softmax of huge scales and the "interleave" mapping are left to the portable
kernel (the dispatcher in launch.py decides).

The backward (``_hopper_dkdv_kernel``) walks key tiles the same way, (Q, dO) tiles streamed
down the key block's column of the transposed tables; with ``FUSED_DQ`` (the default, launch.py
``HOPPER_FUSED_DQ``) it also computes dQ, as FlashAttention-3 does: both warpgroups' dS^T of a
step meet in shared memory, each multiplies the step's dS by half of K's columns, and a writer
warp adds the products to an fp32 accumulator with the copy engine's reduce (``_tma_reduce_add``).

Gluon has no interpreter: this file is compiled and tested on Hopper GPUs only
(tests/test_hopper.py); the CPU suite compiles it to sm_90 machine code without running it.
"""
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                               warpgroup_mma, warpgroup_mma_wait)
from triton._C.libtriton import ir as _ir
from triton.experimental.gluon.language._core import builtin as _builtin

from .tiles import (_alibi2, _column_split_scores, _log2_scores, _slot_sequence, _softcap_shift, _tanh,
                    _word_pieces)

LN2 = gl.constexpr(0.6931471805599453)      # ln 2: log2-domain statistics to natural log


@_builtin
def _tma_reduce_add(tensor_desc, coord, src, _semantic=None):
    """``tensor[coord + box] += src`` by the copy engine (``cp.reduce.async.bulk.tensor``, add):
    Triton's ``AsyncTMAReduceOp``, which Gluon 3.6 builds but does not export. It completes
    like a TMA store (a bulk group: ``tma.store_wait``); coordinates past the tensor's end are
    skipped, negative ones fault (the accumulator is padded)."""
    coord = _semantic._convert_to_ir_values(coord, require_i64=False)
    _semantic.builder.create_async_tma_reduce(_ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle,
                                              coord, src.handle)


# Shared with the portable kernels: tiles.py's ``_slot_sequence`` and score modifiers (``_tanh``,
# ``_alibi2``, ``_log2_scores``), elementwise ``@triton.jit`` functions, which these Gluon kernels
# call like their own (the sm_90 code is the same as with Gluon copies of them), with the
# constexprs of 16-bit inputs on the GPU (tanh.approx.f32) in log2 units.
_UPCAST = gl.constexpr(False)
_PRECISION = gl.constexpr("tf32")
_NATURAL = gl.constexpr(False)
# the fused dQ's staging tiles: [64, _DQ_COLS] fp32, rows of 128 bytes (the copy engine's widest
# swizzle)
_DQ_COLS = gl.constexpr(32)


# ------------------------------------------------------------------ dropout
@gluon.constexpr_function
def _draw_layout(rows, calls):
    """Where the Philox calls ``[rows, calls]`` of a tile sit: call ``c*4 + t`` of a row in the
    thread that holds that row, and lane ``t`` (mod 4), of the wgmma accumulator of 4 warps
    (16 rows each; ``rows`` = 64). That thread holds exactly the keys ``c*CH + n*8 + t*2 + h``
    the call serves (tiles.py ``_keep``, the "mma" mapping), so the draws expand into the
    accumulator layout by register relabeling alone."""
    assert rows == 64 and calls % 4 == 0, (rows, calls)
    reg = [[8, 0]] + [[0, 4 << i] for i in range((calls // 4).bit_length() - 1)]
    lane = [[0, 1], [0, 2], [1, 0], [2, 0], [4, 0]]
    return gl.DistributedLinearLayout(reg, lane, [[16, 0], [32, 0]], [], [rows, calls])


@gluon.jit
def _mulwide_a(x):
    """(hi, lo) 32-bit halves of ``x * 0xD2511F53`` (Philox's round multiplier A) by one
    ``mul.wide.u32`` (one IMAD.WIDE.U32), where ``tl.philox``'s ``umulhi`` and ``mul`` compile
    to two instructions (IMAD.HI.U32 and IMAD)."""
    return gl.inline_asm_elementwise("{.reg .b64 t; mul.wide.u32 t, $2, 0xD2511F53; mov.b64 {$1, $0}, t;}",
                                     "=r,=r,r", [x], dtype=(gl.uint32, gl.uint32), is_pure=True,
                                     pack=1)


@gluon.jit
def _mulwide_b(x):
    """(hi, lo) of ``x * 0xCD9E8D57`` (round multiplier B), as :func:`_mulwide_a`."""
    return gl.inline_asm_elementwise("{.reg .b64 t; mul.wide.u32 t, $2, 0xCD9E8D57; mov.b64 {$1, $0}, t;}",
                                     "=r,=r,r", [x], dtype=(gl.uint32, gl.uint32), is_pure=True,
                                     pack=1)


@gluon.jit
def _philox_wide(seed, c0, c1, c2, c3, ROUNDS: gl.constexpr):
    """Philox-4x32 bit for bit as ``tl.philox(seed, c0, c1, c2, c3, ROUNDS)`` (int32 counters,
    an int64 seed: key = its low and high words), each round's two 32x32 products one
    ``mul.wide.u32`` apiece (:func:`_mulwide_a`)."""
    seed = seed.to(gl.uint64)
    k0 = (seed & 0xFFFFFFFF).to(gl.uint32)
    k1 = ((seed >> 32) & 0xFFFFFFFF).to(gl.uint32)
    c0 = c0.to(gl.uint32, bitcast=True)
    c1 = c1.to(gl.uint32, bitcast=True)
    c2 = c2.to(gl.uint32, bitcast=True)
    c3 = c3.to(gl.uint32, bitcast=True)
    for _ in gl.static_range(ROUNDS):
        hi_b, lo_b = _mulwide_b(c2)
        hi_a, lo_a = _mulwide_a(c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@gluon.jit
def _topped(r, BITS: gl.constexpr):
    """Each draw of the 32-bit word ``r`` moved to its top bits, along new trailing axes laid out
    as tiles.py ``_word_pieces``: draw b is ``r << (32 - BITS * (b + 1))``, whose top ``BITS``
    bits are the draw (the bits below it do not change a comparison with a cut whose low bits
    are 0, :func:`_dropout_cut`). One shift per draw but the top one; no mask."""
    if BITS == 16:
        return gl.join(r << 16, r)
    else:
        return gl.join(gl.join(r << 24, r << 16), gl.join(r << 8, r))


@gluon.jit
def _topped4(w0, w1, w2, w3, BITS: gl.constexpr):
    """The draws of four words along new trailing axes ``[..., pieces.., a, b]`` (word
    ``a + 2 b``), each in the top bits of a uint32 (:func:`_topped`)."""
    return gl.join(gl.join(_topped(w0, BITS), _topped(w1, BITS)),
                   gl.join(_topped(w2, BITS), _topped(w3, BITS)))


@gluon.jit
def _dropout_cut(threshold, VARIANT: gl.constexpr):
    """The keep threshold in the top bits of a word (:func:`_topped`): a draw is kept iff its
    topped word is >= this (unsigned)."""
    BITS: gl.constexpr = (VARIANT // 1000) % 100
    return threshold.to(gl.uint32) << (32 - BITS)


@gluon.jit
def _dropout_words(seed, rng_offset, bh, row0, u0, layout: gl.constexpr,
                   ROWS: gl.constexpr, COLS: gl.constexpr, VARIANT: gl.constexpr):
    """Dropout's draws ``[ROWS, COLS]`` of query tensor rows ``row0 + [0, ROWS)`` against key
    positions ``u0 + [0, COLS)``, in ``layout`` (the wgmma accumulator of 4 warps, queries
    along rows): the bits tiles.py ``_keep`` draws (and the torch backend, sparseflash.philox)
    under the "mma" mapping, 16- or 8-bit draws, each in the top bits of a uint32 (compare with
    :func:`_dropout_cut`).

    ``VARIANT`` is the kernels' HAS_DROPOUT code, ``BITS * 1000 + MMA * 100 + ROUNDS``, plus
    ``100000 * FORM`` (``launch.HOPPER_DROPOUT_FORM``): FORM bit 0 runs the Philox rounds with
    ``mul.wide.u32`` (:func:`_philox_wide`), else ``tl.philox``; bit 1 is read by the forward
    (:func:`_dropped`). The Philox calls run in :func:`_draw_layout`; the joins, permute and
    reshapes below only relabel registers (``assert_trivial``: no data moves)."""
    BITS: gl.constexpr = (VARIANT // 1000) % 100
    ROUNDS: gl.constexpr = VARIANT % 100
    WIDE: gl.constexpr = (VARIANT // 100000) % 2 == 1
    gl.static_assert((VARIANT // 100) % 10 == 1, "the Hopper kernels draw the mma mapping only")
    CH: gl.constexpr = 4 * (128 // BITS)           # keys served by 4 calls: 32 or 64
    gl.static_assert(COLS % CH == 0)
    C: gl.constexpr = COLS // CH
    cnt_layout: gl.constexpr = _draw_layout(ROWS, 4 * C)
    g = (u0 // CH) * 4 + gl.arange(0, 4 * C, gl.SliceLayout(0, cnt_layout))   # c*4 + t
    rows = row0 + gl.arange(0, ROWS, gl.SliceLayout(1, cnt_layout))
    c0 = g[None, :] + rows[:, None] * 0
    c1 = rows[:, None] + g[None, :] * 0
    if WIDE:
        r0, r1, r2, r3 = _philox_wide(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS)
    else:
        r0, r1, r2, r3 = tl.philox(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS)
    x = _topped4(r0, r1, r2, r3, BITS)
    if BITS == 16:
        # [R, 4C, h, n0, n1] -> [R, C, n1, n0, t, h]: key c*32 + n*8 + t*2 + h
        x = gl.permute(gl.reshape(x, (ROWS, C, 4, 2, 2, 2)), (0, 1, 5, 4, 2, 3))
    else:
        # draw 4w + x + 2y = 2n + h: h = x, n = y + 2 w0 + 4 w1
        x = gl.permute(gl.reshape(x, (ROWS, C, 4, 2, 2, 2, 2)), (0, 1, 6, 5, 4, 2, 3))
    return gl.convert_layout(gl.reshape(x, (ROWS, COLS)), layout, assert_trivial=True)


# The "quad" mapping (philox.py): the call with counter ``(g(k), R0, bh, offset)`` serves the
# queries {p, p+1, p+8, p+9} (p % 16 in {0, 2, 4, 6}, positions; R0 the tensor row of p) against
# the keys {k, k+8} (k % 16 < 8; g(k) = (k // 16) * 8 + k % 8): word 2y + x is query p + y
# against key k + 8x, its low half query p, its high half query p + 8. The transposed
# accumulator of the dK/dV kernel holds every call's 8 draws in one thread; the forward's pairs
# of threads (rows r and r + 1, lanes 4 apart) each draw half the calls and swap half the words.
@gluon.constexpr_function
def _quad_layout(rows, calls):
    """Where the Philox calls ``[rows, calls]`` of a quad-mapped tile sit: call row
    ``8 w + r`` in warp ``w`` and lanes ``4 r + c``, call column ``4 m + c`` in register ``m``:
    rows = 32 (one per 16-slab row pair of 4 warps), lane ``t % 4`` = ``c``."""
    assert rows == 32 and calls % 4 == 0, (rows, calls)
    reg = [[0, 4 << i] for i in range((calls // 4).bit_length() - 1)]
    lane = [[0, 1], [0, 2], [1, 0], [2, 0], [4, 0]]
    return gl.DistributedLinearLayout(reg, lane, [[8, 0], [16, 0]], [], [rows, calls])


@gluon.jit
def _quad_grid(M: gl.constexpr):
    """The call indices of a quad-mapped tile of ``16 M`` columns, slices of
    :func:`_quad_layout`: rows ``8 w + r`` (``[32]``) and columns ``4 m + c`` (``[4M]``)."""
    cnt_layout: gl.constexpr = _quad_layout(32, 4 * M)
    i = gl.arange(0, 32, gl.SliceLayout(1, cnt_layout))
    j = gl.arange(0, 4 * M, gl.SliceLayout(0, cnt_layout))
    return i, j


@gluon.jit
def _philox_any(seed, c0, c1, c2, c3, ROUNDS: gl.constexpr, WIDE: gl.constexpr):
    if WIDE:
        return _philox_wide(seed, c0, c1, c2, c3, ROUNDS)
    else:
        return tl.philox(seed, c0, c1, c2, c3, ROUNDS)


@gluon.jit
def _swap_lanes4(x):
    """``x`` of the lane 4 apart (``shfl.sync.bfly`` by 4: accumulator rows r and r ^ 1)."""
    return gl.inline_asm_elementwise("shfl.sync.bfly.b32 $0, $1, 4, 31, -1;", "=r,r", [x],
                                     dtype=gl.uint32, is_pure=True, pack=1)


@gluon.jit
def _trade_rows(even, r0, r1, r2, r3):
    """The forward's lane-pair trade of the quad mappings: a thread of even rows keeps words
    0, 1 of its call and sends 2, 3 to the thread of rows r ^ 1 (``shfl.sync.bfly`` by 4), which
    keeps 2, 3 of its own call and sends 0, 1. Returns the thread's words of the even thread's
    call then of the odd thread's. ``gl.where``'s SELs (with the 8-bit draws 1024 instructions
    a step, against 1048 with :func:`_pick`'s LOP3s)."""
    g0 = _swap_lanes4(gl.where(even, r2, r0))
    g1 = _swap_lanes4(gl.where(even, r3, r1))
    return gl.where(even, r0, g0), gl.where(even, r1, g1), gl.where(even, g0, r2), gl.where(even, g1, r3)


@gluon.jit
def _pick(odd, a, b):
    """``a`` where ``odd`` is all zeros, ``b`` where it is all ones (uint32 words): a bitwise
    select, which ptxas makes one LOP3 that needs no predicate register."""
    return (a & ~odd) | (b & odd)


# 8-bit draws: the call with counter ``((k // 16) * 4 + (k % 16) // 2, R0, bh, offset)`` serves
# the queries {p, p+1, p+8, p+9} against the keys {k, k+1, k+8, k+9} (p % 16, k % 16 in
# {0, 2, 4, 6}): word 2y + x is query p + y against key k + x, its byte v + 2z query p + y + 8z
# against key k + x + 8v. In either orientation a call's words split by one index between the
# lanes 4 apart (rows r and r ^ 1): y in the forward (queries along rows), x in the dK/dV kernel
# (keys along rows). Each lane of a pair draws the call of every other 16-wide block and trades
# two words of it for two of its partner's: half the Philox work of 16-bit draws per score, the
# same two shuffles a call.
@gluon.jit
def _quad8_calls(seed, rng_offset, bh, row0, u0, COLS: gl.constexpr, ROUNDS: gl.constexpr,
                 WIDE: gl.constexpr):
    """:func:`_quad_calls` for 8-bit draws: the thread of rows r, r + 8 draws the calls of the
    key blocks ``2 m + r % 2`` (16 keys each) at its lane's key pair, keeps the words of its
    rows (y = r % 2) and trades the other two with the thread of rows r ^ 1."""
    gl.static_assert(COLS % 32 == 0)
    M2: gl.constexpr = COLS // 32
    i, j = _quad_grid(M2)                                          # 8 w + r, 4 m + c
    y0 = (i & 1)[:, None]                                          # the thread's row parity
    c0 = (u0 // 16) * 4 + (j >> 2)[None, :] * 8 + y0 * 4 + (j & 3)[None, :]
    c1 = (row0 + (i >> 3) * 16 + (i & 6))[:, None] + j[None, :] * 0
    r0, r1, r2, r3 = _philox_any(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS, WIDE)
    # even rows keep words 0, 1 (y = 0) of their call and send 2, 3; odd rows the reverse;
    # block 2m then 2m + 1 (the even thread's own call is block 2m's), key parity x = 0 then 1
    return _trade_rows((y0 + j[None, :] * 0) == 0, r0, r1, r2, r3)


@gluon.jit
def _quad8_words_t(seed, rng_offset, bh, row0, u0, layout: gl.constexpr, KEYS: gl.constexpr,
                   QUERIES: gl.constexpr, ROUNDS: gl.constexpr, WIDE: gl.constexpr):
    """:func:`_quad_words_t` for 8-bit draws: the thread of key rows k, k + 8 draws the calls of
    the query blocks ``2 m + k % 2`` at its lane's query pair, keeps the words of its keys
    (x = k % 2) and trades the other two with the thread of key rows k ^ 1."""
    gl.static_assert(QUERIES % 32 == 0)
    M2: gl.constexpr = QUERIES // 32
    i, j = _quad_grid(M2)                                          # 8 w + k, 4 m + c
    x0 = (i & 1)[:, None]                                          # the thread's key parity
    c0 = ((u0 // 16) * 4 + (i >> 3) * 4 + ((i & 7) >> 1))[:, None] + j[None, :] * 0
    c1 = row0 + (j >> 2)[None, :] * 32 + x0 * 16 + (j & 3)[None, :] * 2
    r0, r1, r2, r3 = _philox_any(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS, WIDE)
    # all ones in the odd threads: the selects below are bitwise (one LOP3 each, no predicate;
    # with gl.where ptxas rebuilt the predicate before most SELs: 921 instructions a step
    # against 872)
    odd = (0 - (x0 + j[None, :] * 0)).to(gl.uint32, bitcast=True)
    # even key rows keep words 0, 2 (x = 0) of their call and send 1, 3; odd rows the reverse
    g0 = _swap_lanes4(_pick(odd, r1, r0))
    g1 = _swap_lanes4(_pick(odd, r3, r2))
    # block 2m then 2m + 1, query parity y = 0 then 1
    h00 = _pick(odd, r0, g0)
    h01 = _pick(odd, r2, g1)
    h10 = _pick(odd, g0, r1)
    h11 = _pick(odd, g1, r3)
    x = _topped4(h00, h01, h10, h11, 8)                            # [32, 4M2, v, z, y, b]
    # [w, k, m, c, v, z, y, b] -> [w, v, k, m, b, z, c, y]: key 16w + 8v + k,
    # query 32m + 16b + 8z + 2c + y
    x = gl.permute(gl.reshape(x, (4, 8, M2, 4, 2, 2, 2, 2)), (0, 4, 1, 2, 7, 5, 3, 6))
    return gl.convert_layout(gl.reshape(x, (KEYS, QUERIES)), layout, assert_trivial=True)


@gluon.jit
def _quad_calls(seed, rng_offset, bh, row0, u0, COLS: gl.constexpr, VARIANT: gl.constexpr):
    """The quad mapping's Philox words in the forward, after the lane pairs' trade: four
    ``[32, 4M]`` uint32 tensors in :func:`_quad_layout`, two draws a word (16-bit) or four
    (8-bit), which :func:`_quad_words_of` spreads into the accumulator's layout. The thread of
    rows r, r + 8 draws the calls of keys k with k % 2 == r % 2, keeps the words of its rows
    and trades the others with the thread of rows r ^ 1 (one shuffle a word); 8-bit draws:
    :func:`_quad8_calls`."""
    ROUNDS: gl.constexpr = VARIANT % 100
    WIDE: gl.constexpr = (VARIANT // 100000) % 2 == 1
    BITS: gl.constexpr = (VARIANT // 1000) % 100
    if BITS == 8:
        return _quad8_calls(seed, rng_offset, bh, row0, u0, COLS, ROUNDS, WIDE)
    else:
        return _quad16_calls(seed, rng_offset, bh, row0, u0, COLS, ROUNDS, WIDE)


@gluon.jit
def _quad16_calls(seed, rng_offset, bh, row0, u0, COLS: gl.constexpr, ROUNDS: gl.constexpr,
                  WIDE: gl.constexpr):
    """:func:`_quad_calls` for 16-bit draws."""
    M: gl.constexpr = COLS // 16
    i, j = _quad_grid(M)                                           # 8 w + r, 4 m + c
    y0 = (i & 1)[:, None]                                          # the thread's row parity
    c0 = (u0 // 16) * 8 + (j >> 2)[None, :] * 8 + (j & 3)[None, :] * 2 + y0
    c1 = (row0 + (i >> 3) * 16 + (i & 6))[:, None] + j[None, :] * 0
    r0, r1, r2, r3 = _philox_any(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS, WIDE)
    # even rows keep words 0, 1 (queries p, p + 8) and send 2, 3; odd rows the reverse; key
    # parity 0 then 1: the even thread's own call is of even keys
    return _trade_rows((y0 + j[None, :] * 0) == 0, r0, r1, r2, r3)


@gluon.jit
def _quad_words_of(h00, h01, h10, h11, layout: gl.constexpr, ROWS: gl.constexpr,
                   COLS: gl.constexpr, VARIANT: gl.constexpr):
    """:func:`_quad_calls`'s words as the topped draws ``[ROWS, COLS]`` in the forward's
    accumulator ``layout``: a shift a draw but a word's top one, then a relabeling."""
    BITS: gl.constexpr = (VARIANT // 1000) % 100
    if BITS == 8:
        M2: gl.constexpr = COLS // 32
        x = _topped4(h00, h01, h10, h11, 8)                        # [32, 4M2, v, z, x, b]
        # [w, r, m, c, v, z, x, b] -> [w, z, r, m, b, v, c, x]: row 16w + 8z + r,
        # key 32m + 16b + 8v + 2c + x
        x = gl.permute(gl.reshape(x, (4, 8, M2, 4, 2, 2, 2, 2)), (0, 5, 1, 2, 7, 4, 3, 6))
    else:
        M: gl.constexpr = COLS // 16
        x = _topped4(h00, h01, h10, h11, 16)                       # [32, 4M, z, x, h]
        # [w, r, m, c, z, x, h] -> [w, z, r, m, x, c, h]: row 16w + 8z + r, key 16m + 8x + 2c + h
        x = gl.permute(gl.reshape(x, (4, 8, M, 4, 2, 2, 2)), (0, 4, 1, 2, 5, 3, 6))
    return gl.convert_layout(gl.reshape(x, (ROWS, COLS)), layout, assert_trivial=True)


@gluon.jit
def _quad_words(seed, rng_offset, bh, row0, u0, layout: gl.constexpr, ROWS: gl.constexpr,
                COLS: gl.constexpr, VARIANT: gl.constexpr):
    """The quad mapping's draws ``[ROWS, COLS]`` (topped, as :func:`_dropout_words`) in the
    forward's accumulator ``layout`` (queries along rows; ``row0``: the tensor row of the tile's
    first query, whose position is a multiple of 16; ``u0 % 16 == 0``): :func:`_quad_calls`,
    then :func:`_quad_words_of`."""
    gl.static_assert(ROWS == 64)
    h00, h01, h10, h11 = _quad_calls(seed, rng_offset, bh, row0, u0, COLS, VARIANT)
    return _quad_words_of(h00, h01, h10, h11, layout, ROWS, COLS, VARIANT)


@gluon.jit
def _quad_words_t(seed, rng_offset, bh, row0, u0, layout: gl.constexpr, KEYS: gl.constexpr,
                  QUERIES: gl.constexpr, VARIANT: gl.constexpr):
    """The quad mapping's draws ``[KEYS, QUERIES]`` (topped) in the dK/dV kernel's transposed
    accumulator ``layout`` (keys along rows): with 16-bit draws each thread draws exactly the
    calls it holds; 8-bit draws: :func:`_quad8_words_t`."""
    ROUNDS: gl.constexpr = VARIANT % 100
    WIDE: gl.constexpr = (VARIANT // 100000) % 2 == 1
    BITS: gl.constexpr = (VARIANT // 1000) % 100
    gl.static_assert(KEYS == 64)
    if BITS == 8:
        return _quad8_words_t(seed, rng_offset, bh, row0, u0, layout, KEYS, QUERIES, ROUNDS, WIDE)
    r0, r1, r2, r3 = _quad_calls_t(seed, rng_offset, bh, row0, u0, QUERIES, ROUNDS, WIDE)
    return _quad_words_t_of(r0, r1, r2, r3, layout, KEYS, QUERIES)


@gluon.jit
def _quad_calls_t(seed, rng_offset, bh, row0, u0, QUERIES: gl.constexpr, ROUNDS: gl.constexpr,
                  WIDE: gl.constexpr):
    """The 16-bit quad mapping's Philox words of a dK/dV step (:func:`_quad_words_t`): four
    ``[32, 4M]`` uint32 tensors in :func:`_quad_layout`, call row ``8 w + k`` (keys ``16 w + k``
    and ``+ 8``), call column ``4 m + c`` (queries ``16 m + 2 c`` and ``+ 1``, ``+ 8``, ``+ 9``)."""
    M: gl.constexpr = QUERIES // 16
    i, j = _quad_grid(M)                                           # 8 w + k, 4 m + c
    c0 = ((u0 // 16) * 8 + i)[:, None] + j[None, :] * 0
    c1 = row0 + (j >> 2)[None, :] * 16 + (j & 3)[None, :] * 2 + i[:, None] * 0
    return _philox_any(seed, c0, c1, c0 * 0 + bh, c0 * 0 + rng_offset, ROUNDS, WIDE)


@gluon.jit
def _early_calls_t(nonneg, seed, rng_offset, bh, row0, u0, QUERIES: gl.constexpr,
                   VARIANT: gl.constexpr):
    """:func:`_quad_calls_t` in a branch of its own, for the dK/dV kernel's early draws (FORM
    bit 2): ``nonneg`` is never negative, but the compiler cannot know it. In the block of a
    step's products and its wait, ptxas moved the Philox rounds past the wait (sm_90 SASS); a
    block boundary keeps them where they are written. The other branch never runs (no rounds)."""
    ROUNDS: gl.constexpr = VARIANT % 100
    WIDE: gl.constexpr = (VARIANT // 100000) % 2 == 1
    if nonneg >= 0:
        return _quad_calls_t(seed, rng_offset, bh, row0, u0, QUERIES, ROUNDS, WIDE)
    else:
        return _quad_calls_t(seed, rng_offset, bh, row0 * 0, u0 * 0, QUERIES, 0, True)


@gluon.jit
def _quad_words_t_of(r0, r1, r2, r3, layout: gl.constexpr, KEYS: gl.constexpr,
                     QUERIES: gl.constexpr):
    """:func:`_quad_calls_t`'s words as the topped draws ``[KEYS, QUERIES]`` in the dK/dV
    kernel's transposed accumulator ``layout``: a shift a draw but a word's top one, then a
    relabeling."""
    M: gl.constexpr = QUERIES // 16
    x = _topped4(r0, r1, r2, r3, 16)                               # [32, 4M, z, x, y]
    # [w, k, m, c, z, x, y] -> [w, x, k, m, z, c, y]: key 16w + 8x + k, query 16m + 8z + 2c + y
    x = gl.permute(gl.reshape(x, (4, 8, M, 4, 2, 2, 2)), (0, 5, 1, 2, 4, 3, 6))
    return gl.convert_layout(gl.reshape(x, (KEYS, QUERIES)), layout, assert_trivial=True)


@gluon.jit
def _dropout_keep(seed, rng_offset, bh, row0, u0, threshold, layout: gl.constexpr,
                  ROWS: gl.constexpr, COLS: gl.constexpr, VARIANT: gl.constexpr):
    """Dropout's keep mask (bool) of the draws :func:`_dropout_words` makes."""
    return _dropout_words(seed, rng_offset, bh, row0, u0, layout, ROWS, COLS,
                          VARIANT) >= _dropout_cut(threshold, VARIANT)


@gluon.jit
def _dropped(e, seed, rng_offset, bh, row0, u0, threshold, layout: gl.constexpr,
             ROWS: gl.constexpr, COLS: gl.constexpr, VARIANT: gl.constexpr):
    """``e`` (fp32, ``layout``) with the dropped entries zeroed. With FORM bit 1 (see
    :func:`_dropout_words`) each entry is one compare and one select in PTX (``setp.hs.u32``,
    ``selp.f32``) on its topped word, which the compiler cannot move past the conversion to
    16 bits; as a ``gl.where`` LLVM selects on the converted halves instead (split, select and
    repack: about twice the instructions in the sm_90 SASS). The "quad" mapping's draws
    (:func:`_quad_words`) always take the explicit compare and select."""
    QUAD: gl.constexpr = (VARIANT // 100) % 10 == 2
    if QUAD or (VARIANT // 200000) % 2 == 1:
        if QUAD:
            words = _quad_words(seed, rng_offset, bh, row0, u0, layout, ROWS, COLS, VARIANT)
        else:
            words = _dropout_words(seed, rng_offset, bh, row0, u0, layout, ROWS, COLS, VARIANT)
        cut = gl.full([ROWS, COLS], 0, gl.uint32, layout) + _dropout_cut(threshold, VARIANT)
        return gl.inline_asm_elementwise(
            "{.reg .pred p; setp.hs.u32 p, $2, $3; selp.f32 $0, $1, 0f00000000, p;}",
            "=f,f,r,r", [e, words, cut], dtype=gl.float32, is_pure=True, pack=1)
    else:
        return gl.where(_dropout_keep(seed, rng_offset, bh, row0, u0, threshold, layout, ROWS,
                                      COLS, VARIANT), e, 0.0)


@gluon.jit
def _relu_to(x, dtype: gl.constexpr):
    """``gl.maximum(x, 0.0).to(dtype)`` for fp32 ``x`` (bfloat16 or float16), bit for bit, by one
    ``cvt.rn.relu`` a pair of entries (F2FP with RELU in the sm_90 SASS): the max is folded into
    the conversion. Pairs are consecutive entries of a thread (an accumulator's column pairs)."""
    if dtype == gl.bfloat16:
        return gl.inline_asm_elementwise("cvt.rn.relu.bf16x2.f32 $0, $2, $1;", "=r,f,f", [x],
                                         dtype=gl.bfloat16, is_pure=True, pack=2)
    else:
        return gl.inline_asm_elementwise("cvt.rn.relu.f16x2.f32 $0, $2, $1;", "=r,f,f", [x],
                                         dtype=gl.float16, is_pure=True, pack=2)


@gluon.jit
def _ds_select(pT, dpT, scale, delta):
    """``pT * where(pT > 0, dpT * scale - delta, delta)`` in PTX, bit for bit the ``gl.where``
    form (one ``fma.rn``, a compare, a select and one ``mul.rn`` an entry)."""
    return gl.inline_asm_elementwise(
        "{.reg .pred q; .reg .f32 t, n; setp.gt.f32 q, $1, 0f00000000; neg.f32 n, $4; "
        "fma.rn.f32 t, $2, $3, n; selp.f32 t, t, $4, q; mul.rn.f32 $0, $1, t;}",
        "=f,f,f,f,f", [pT, dpT, scale, delta], dtype=gl.float32, is_pure=True, pack=1)


# ------------------------------------------------------------------ conditional rescale
# With RESCALE > 0 (launch.py HOPPER_FWD_RESCALE) a row's running max moves only when a tile's
# max exceeds it by more than RESCALE (log2 units); until then the row's exponentials are taken
# against the stale max (each at most 2**RESCALE) and its factor alpha is exactly 1. The
# output accumulator is multiplied only where some row of the warp moved (one vote and a
# warp-uniform branch around the products), which in a long row is about its first steps.
_RESCALE_PACK = gl.constexpr(16)     # accumulator entries per branch


@gluon.jit
def _warp_moved(alpha):
    """1.0 in every lane of a warp where any lane's row factor ``alpha`` (``[rows]``, a thread's
    rows r and r + 8, consecutive in the accumulator's row layout) is not exactly 1, else 0.0:
    ``vote.sync.any`` over both rows."""
    return gl.inline_asm_elementwise(
        "{.reg .pred p, q; setp.neu.f32 p, $2, 0f3F800000; setp.neu.f32 q, $3, 0f3F800000; "
        "or.pred p, p, q; vote.sync.any.pred p, p, 0xffffffff; "
        "selp.f32 $0, 0f3F800000, 0f00000000, p; mov.f32 $1, $0;}",
        "=f,=f,f,f", [alpha], dtype=gl.float32, is_pure=True, pack=2)


@gluon.constexpr_function
def _rescale_asm(n):
    """PTX for ``n`` accumulator entries ($0..: outputs, then the entries, their factors and
    the warp's flag): the entries as they are, multiplied only where the flag is not 0. The
    branch condition is warp-uniform (``bra.uni``); ``${:uid}`` makes each copy's label
    unique. ptxas gives the outputs the entries' registers (no moves in the sm_90 SASS)."""
    movs = " ".join(f"mov.f32 ${i}, ${n + i};" for i in range(n))
    muls = " ".join(f"mul.f32 ${i}, ${i}, ${2 * n + i};" for i in range(n))
    return ("{.reg .pred p; " + movs + f" setp.eq.f32 p, ${3 * n}, 0f00000000; "
            "@p bra.uni SKIP${:uid}; " + muls + " SKIP${:uid}: }")


@gluon.constexpr_function
def _rescale_constraints(n):
    return ",".join(["=f"] * n + ["f"] * (3 * n))


@gluon.jit
def _rescaled(acc, alpha, moved):
    """``acc * alpha[:, None]`` where ``moved`` (:func:`_warp_moved`, ``[rows]``) is not 0,
    else ``acc``: a branch per :data:`_RESCALE_PACK` entries of a thread."""
    a, _ = gl.broadcast(alpha[:, None], acc)
    f, _ = gl.broadcast(moved[:, None], acc)
    return gl.inline_asm_elementwise(_rescale_asm(_RESCALE_PACK), _rescale_constraints(_RESCALE_PACK),
                                     [acc, a, f], dtype=gl.float32, is_pure=True, pack=_RESCALE_PACK)


@gluon.jit
def _geometry(seqs, ts, pid_m, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, off_h,
              BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, PER_SEQ: gl.constexpr):
    """The query tile's sequence (the ``seqs`` row, or the scalars shared by the batch) and
    the table row it walks: (q_start, q_lo, q_hi, k_start, k_lo, k_hi, start_m, row, tile_ok).
    Same rule as kernels/tiles.py ``_query_tile``: tiles align to absolute positions."""
    if PER_SEQ:
        r = seqs + ts * 10
        q_start = gl.load(r)
        q_len = gl.load(r + 1)
        k_start = gl.load(r + 2)
        k_len = gl.load(r + 3)
        q_pos = gl.load(r + 4)
        k_pos = gl.load(r + 5)
        row_off = gl.load(r + 6)
        nq = gl.load(r + 8)
    else:
        q_start = 0
        k_start = 0
        row_off = 0
    start_m = (q_pos // BLOCK_M + pid_m) * BLOCK_M
    tile_ok = start_m < q_pos + q_len
    row = row_off + off_h * table_heads_gt1 * nq + start_m // BLOCK - q_pos // BLOCK
    row = gl.where(tile_ok, row, 0)
    return q_start, q_pos, q_pos + q_len, k_start, k_pos, k_pos + k_len, start_m, row, tile_ok


@gluon.jit
def _wg_row(row, start_m, first, q_lo, q_hi, tile_ok, BLOCK: gl.constexpr,
            NUM_CONSUMERS: gl.constexpr):
    """(table row, holds rows of the sequence) of the consumer warpgroup whose 64 queries start
    at ``first``. With two consumers (a 128-query tile inside one block) it is the tile's row;
    with three (192 queries: 64-query thirds, each inside one block, the tile across two) the
    row of its own block."""
    if NUM_CONSUMERS == 2:
        return row, tile_ok
    else:
        ok = tile_ok & (first + 64 > q_lo) & (first < q_hi)
        return gl.where(ok, row + first // BLOCK - start_m // BLOCK, 0), ok


@gluon.jit
def _walked_row(row, start_m, q_hi, tile_ok, BLOCK: gl.constexpr, NUM_CONSUMERS: gl.constexpr):
    """The table row the producer walks: the tile's, or with three consumers the row of the last
    warpgroup that holds a query of the sequence. Every other warpgroup's row is a prefix of
    it (launch.py ``_prefix_rows`` checks this on the host before choosing three)."""
    if NUM_CONSUMERS == 2:
        return row
    else:
        last = gl.minimum((q_hi - 1 - start_m) // 64, NUM_CONSUMERS - 1)
        return gl.where(tile_ok, row + (start_m + last * 64) // BLOCK - start_m // BLOCK, 0)


@gluon.jit
def _program_at(v, schedule, num_m_tiles, num_heads, REVERSE_M: gl.constexpr,
                SCHEDULED: gl.constexpr, PER_SEQ: gl.constexpr, PACKED: gl.constexpr):
    """(query tile, head, table sequence, batch index) of the forward's virtual program ``v``
    (tiles.py rules): the linear index of a ``(num_m_tiles, slots * heads)`` grid, or the
    position in the launch order ``schedule``."""
    if SCHEDULED:
        t = gl.load(schedule + v)
        pid_m = t % num_m_tiles
        pid_sh = t // num_m_tiles
    else:
        pid_m = v % num_m_tiles
        if REVERSE_M:
            pid_m = num_m_tiles - 1 - pid_m
        pid_sh = v // num_m_tiles
    ts, off_b = _slot_sequence(pid_sh // num_heads, PER_SEQ, PACKED)
    return pid_m, pid_sh % num_heads, ts, off_b


@gluon.jit
def _own_program():
    """The virtual program of a CTA that runs one (a 1-D or 2-D grid in launch order)."""
    return gl.program_id(0) + gl.program_id(1) * gl.num_programs(0)


@gluon.jit
def _publish_tile(tile_slots, qb, v, DYNAMIC: gl.constexpr):
    """The producer warp hands the consumers the virtual program it copies next into Q buffer
    ``qb`` (-1: none left), ahead of the ``q_bar`` arrive that releases it to them.

    ``DYNAMIC`` 1: ``tile_slots`` is a [Q_BUFS, 1] shared buffer, stored by all 32 lanes. 2
    (launch.HOPPER_TILE_SLOT "global"): a pointer to the CTA's Q_BUFS int32 slots in global
    memory, stored by one lane (Triton predicates a replicated store) and followed by a
    ``bar.warp.sync``; the arrive's release and the consumers' acquiring wait (CTA scope, which
    covers global memory) order it."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])
    if DYNAMIC == 2:
        gl.store(tile_slots + qb + gl.arange(0, 1, layout), gl.full([1], v, gl.int32, layout))
        gl.thread_barrier()
    else:
        tile_slots.index(qb).store(gl.full([1], v, gl.int32, layout))


@gluon.jit
def _read_tile(tile_slots, qb, NUM_WARPS: gl.constexpr, DYNAMIC: gl.constexpr):
    """A consumer warpgroup's read of the program the producer published (after ``q_bar``);
    ``tile_slots`` as in :func:`_publish_tile` (global: a volatile load, never cached across
    the wait)."""
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [NUM_WARPS], [0])
    if DYNAMIC == 2:
        return gl.max(gl.load(tile_slots + qb + gl.arange(0, 1, layout), volatile=True), 0)
    else:
        return gl.max(tile_slots.index(qb).load(layout), 0)


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready,
              kv_empty, v_empty, tile_slots, tile_counter, fwd_ptr, fwd_idx, fwd_nfull, seqs, schedule,
              num_m_tiles, num_programs,
              num_heads, group_size, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1,
              BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
              HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, PER_SEQ: gl.constexpr, PACKED: gl.constexpr,
              REVERSE_M: gl.constexpr, WALK: gl.constexpr, SCHEDULED: gl.constexpr, PERSISTENT: gl.constexpr,
              NUM_CONSUMERS: gl.constexpr, DYNAMIC: gl.constexpr):
    if PERSISTENT and DYNAMIC:
        # at most one CTA per SM; after its first program each takes the next one in launch
        # order at run time (a counter in global memory), so uneven tiles balance
        step = 0
        tile_i = 0
        v = gl.program_id(0)
        while v < num_programs:
            step += _produce_tile(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty,
                                  k_ready, v_ready, kv_empty, v_empty, tile_slots, fwd_ptr, fwd_idx, seqs,
                                  schedule, num_m_tiles, num_heads, group_size, q_len, k_len,
                                  q_pos, k_pos, nq, table_heads_gt1, v, step, tile_i, BLOCK,
                                  BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, PER_SEQ, PACKED,
                                  REVERSE_M, WALK, SCHEDULED, NUM_CONSUMERS, DYNAMIC)
            tile_i += 1
            v = gl.num_programs(0) + gl.atomic_add(tile_counter, 1)
        # the launch's last increment sets the counter back to zero for the next launch
        # (launch._tile_counter keeps one per stream): there are num_programs in all, one per
        # program handed out after the first grid and one past the end per CTA, so the value
        # num_programs - 1 comes last, after every other CTA's final increment
        if v - gl.num_programs(0) == num_programs - 1:
            gl.atomic_xchg(tile_counter, 0)
        # none left: once the consumers have released this buffer's last Q, tell them
        Q_BUFS: gl.constexpr = q_bar.shape[0]
        qb = tile_i % Q_BUFS
        mbarrier.wait(q_empty.index(qb), ((tile_i // Q_BUFS) & 1) ^ 1)
        _publish_tile(tile_slots, qb, -1, DYNAMIC)
        mbarrier.arrive(q_bar.index(qb))
    elif PERSISTENT:
        # a 1-D grid of at most one CTA per SM: every num_programs(0)-th program in launch
        # order, the K/V ring position carried across them
        step = 0
        tile_i = 0
        for v in range(gl.program_id(0), num_programs, gl.num_programs(0)):
            step += _produce_tile(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty,
                                  k_ready, v_ready, kv_empty, v_empty, tile_slots, fwd_ptr, fwd_idx, seqs,
                                  schedule, num_m_tiles, num_heads, group_size, q_len, k_len,
                                  q_pos, k_pos, nq, table_heads_gt1, v, step, tile_i, BLOCK,
                                  BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, PER_SEQ, PACKED,
                                  REVERSE_M, WALK, SCHEDULED, NUM_CONSUMERS, DYNAMIC)
            tile_i += 1
    else:
        _produce_tile(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready,
                      v_ready, kv_empty, v_empty, tile_slots, fwd_ptr, fwd_idx, seqs, schedule, num_m_tiles,
                      num_heads, group_size, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1,
                      _own_program(), 0, 0, BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES,
                      PER_SEQ, PACKED, REVERSE_M, WALK, SCHEDULED, NUM_CONSUMERS, False)


@gluon.jit
def _produce_tile(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready,
                  v_ready, kv_empty, v_empty, tile_slots, fwd_ptr, fwd_idx, seqs, schedule, num_m_tiles, num_heads,
                  group_size, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, v, step, tile_i,
                  BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, PER_SEQ: gl.constexpr,
                  PACKED: gl.constexpr, REVERSE_M: gl.constexpr, WALK: gl.constexpr, SCHEDULED: gl.constexpr,
                  NUM_CONSUMERS: gl.constexpr, DYNAMIC: gl.constexpr):
    """The copies of one query tile: its Q (once every consumer has released the previous
    tile's, ``q_empty``) and its K/V steps into the ring from position ``step``. Returns the
    number of K/V steps."""
    SUB: gl.constexpr = BLOCK // BLOCK_N
    KV_SPLIT: gl.constexpr = v_empty.shape[0] == NUM_STAGES
    pid_m, off_h, ts, off_b = _program_at(v, schedule, num_m_tiles, num_heads, REVERSE_M,
                                          SCHEDULED, PER_SEQ, PACKED)
    off_kvh = off_h // group_size
    q_start, q_lo, q_hi, k_start, k_lo, k_hi, start_m, row, tile_ok = _geometry(
        seqs, ts, pid_m, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, off_h, BLOCK, BLOCK_M,
        PER_SEQ)
    row = _walked_row(row, start_m, q_hi, tile_ok, BLOCK, NUM_CONSUMERS)
    lo = gl.load(fwd_ptr + row)
    hi = gl.where(tile_ok, gl.load(fwd_ptr + row + 1), lo)
    j0 = k_lo // BLOCK
    k_row0 = k_start - k_lo
    # Q once; the copy engine zero-fills rows past the tensor (rows of another document are
    # read but never stored)
    HALF: gl.constexpr = BLOCK_M // NUM_CONSUMERS
    # Q_BUFS (launch.HOPPER_FWD_Q_BUFFERS) Q buffers, used in turn by a persistent CTA's
    # tiles: with two, the next tile's Q is copied while this one runs. A fresh barrier counts
    # as completed for parity 1: a buffer's first tile does not wait
    Q_BUFS: gl.constexpr = q_bar.shape[0]
    qb = tile_i % Q_BUFS
    mbarrier.wait(q_empty.index(qb), ((tile_i // Q_BUFS) & 1) ^ 1)
    if DYNAMIC:
        _publish_tile(tile_slots, qb, v, DYNAMIC)
    mbarrier.expect(q_bar.index(qb), NUM_CONSUMERS * q_desc.block_type.nbytes)
    for w in gl.static_range(NUM_CONSUMERS):
        tma.async_copy_global_to_shared(q_desc, [off_b, off_h, start_m + q_start - q_lo + w * HALF, 0],
                                        q_bar.index(qb),
                                        q_smem.index(qb * NUM_CONSUMERS + w).reshape([1, 1, HALF, HEAD_DIM]))
    trips = (hi - lo) * SUB
    if WALK == 3:
        diag = _diagonal_trip(fwd_idx, lo, trips, j0, start_m + BLOCK_M // 2, BLOCK, BLOCK_N, 1)
    else:
        diag = 0
    for t in range(trips):
        s = (step + t) % NUM_STAGES
        # the first lap passes fresh barriers
        phase = (((step + t) // NUM_STAGES) & 1) ^ 1
        start_n = _key_start(fwd_idx, lo, _walk(t, trips, WALK, diag), j0, BLOCK, BLOCK_N) + k_row0
        mbarrier.wait(kv_empty.index(s), phase)
        mbarrier.expect(k_ready.index(s), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [off_b, off_kvh, start_n, 0], k_ready.index(s),
                                        k_smem.index(s).reshape([1, 1, BLOCK_N, HEAD_DIM]))
        if KV_SPLIT:
            # V's slot has a release of its own (after the step's P V; K's after Q K^T)
            mbarrier.wait(v_empty.index(s), phase)
        mbarrier.expect(v_ready.index(s), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [off_b, off_kvh, start_n, 0], v_ready.index(s),
                                        v_smem.index(s).reshape([1, 1, BLOCK_N, HEAD_DIM]))
    return trips


@gluon.jit
def _masked(s, start_n, rows_pos, q_lo, q_hi, k_lo, k_hi, KPM, kpm_row, k_row0,
            window_left, window_right, col_layout: gl.constexpr,
            BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr, HAS_WL: gl.constexpr,
            HAS_WR: gl.constexpr, HAS_KPM: gl.constexpr):
    """The token rule of a partial tile (tiles.py ``_visible``/``_key_ok``): -inf where the
    pair is not visible. ``s``: [BLOCK_M, BLOCK_N]; ``start_n``: absolute key position."""
    cols_pos = start_n + gl.arange(0, BLOCK_N, col_layout)                    # [BLOCK_N]
    col_ok = (cols_pos >= k_lo) & (cols_pos < k_hi)
    if HAS_KPM:
        keep = gl.load(KPM + kpm_row + (cols_pos + k_row0), mask=col_ok, other=0)
        col_ok = col_ok & (keep != 0)
    row_ok = (rows_pos >= q_lo) & (rows_pos < q_hi)
    visible = row_ok[:, None] & col_ok[None, :]
    if CAUSAL:
        visible = visible & (cols_pos[None, :] <= rows_pos[:, None])
    if HAS_WL:
        visible = visible & (cols_pos[None, :] >= rows_pos[:, None] - window_left)
    if HAS_WR:
        visible = visible & (cols_pos[None, :] <= rows_pos[:, None] + window_right)
    return gl.where(visible, s, float("-inf"))


@gluon.jit
def _walk(t, trips, WALK: gl.constexpr, diag):
    """The trip (position in the row's table order) that step ``t`` of ``trips`` takes. The
    table lists a row's full blocks, then its partial ones, each by ascending key. WALK 0:
    that order; 1: last to first; 2: the last trip first, then the others in order (a causal
    row starts at its diagonal, then walks up from key 0); 3: trip ``diag`` first (the one
    nearest the tile's diagonal, :func:`_diagonal_trip`), then the others in order, so 2 is 3
    with ``diag = trips - 1``. With the causal ALiBi, whose column term grows with the key,
    starting at the diagonal finds the row max at the first step, so the conditional rescale
    (RESCALE) skips the steps after; in table order the max rose at nearly every step. The
    abs form's bias (non-causal calls) peaks at the diagonal too, inside the row: 3 is its
    walk."""
    if WALK == 1:
        return trips - 1 - t
    elif WALK == 2:
        return gl.where(t == 0, trips - 1, t - 1)
    elif WALK == 3:
        return gl.where(t == 0, diag, gl.where(t <= diag, t - 1, t))
    else:
        return t


@gluon.jit
def _diagonal_trip(fwd_idx, lo, trips, j0, pos, BLOCK: gl.constexpr, BLOCK_N: gl.constexpr,
                   NW: gl.constexpr):
    """The first of a row's ``trips`` trips whose keys lie nearest to key position ``pos`` (the
    tile's middle query: where the abs ALiBi's bias peaks), for WALK 3; 0 without trips. The
    row's table entries read by ``NW`` warps at once, one a thread, the nearest by a min
    reduction of (distance, trip): the producer warp and the consumer warpgroups find the
    same trip."""
    SUB: gl.constexpr = BLOCK // BLOCK_N
    CHUNK: gl.constexpr = 32 * NW
    layout: gl.constexpr = gl.BlockedLayout([1], [32], [NW], [0])
    best = gl.to_tensor(0).to(gl.int64) + 9223372036854775807
    for c in range(0, trips, CHUNK):
        tt = c + gl.arange(0, CHUNK, layout)
        ok = tt < trips
        ks = (gl.load(fwd_idx + lo + tt // SUB, mask=ok, other=0) + j0) * BLOCK + (tt % SUB) * BLOCK_N
        dist = gl.maximum(gl.maximum(ks - pos, pos - (ks + (BLOCK_N - 1))), 0)
        key = gl.where(ok, dist.to(gl.int64) * 4294967296 + tt.to(gl.int64), 9223372036854775807)
        best = gl.minimum(best, gl.min(key, 0))
    return gl.where(trips > 0, (best % 4294967296).to(gl.int32), 0)


@gluon.jit
def _key_start(fwd_idx, lo, t, j0, BLOCK: gl.constexpr, BLOCK_N: gl.constexpr):
    """Absolute position of the first key of trip ``t`` (a table entry is walked as
    ``BLOCK // BLOCK_N`` sub-tiles).

    ``_consume_tile`` calls it where each use needs it (ALiBi's scores, the token rule, the
    dropout draws) rather than once a step: the load hits L1, and a value loaded at the step's
    top stays live across the softmax. Loaded once a step (stop 36, sm_90 SASS at d=128), the
    dropout forward without OVERLAP_PV spilled 14 words (none as it is), for 2-7 instructions
    fewer a step with ALiBi or dropout."""
    SUB: gl.constexpr = BLOCK // BLOCK_N
    return (gl.load(fwd_idx + lo + t // SUB) + j0) * BLOCK + (t % SUB) * BLOCK_N


@gluon.jit
def _fwd_scores(s, start_n, rows_pos, ref, qk_scale, softcap2, alibi2, acol, arow,
                col_layout: gl.constexpr, BLOCK_N: gl.constexpr, HAS_SOFTCAP: gl.constexpr,
                HAS_ALIBI: gl.constexpr):
    """The modified scores of a tile as fwd.py ``_fwd_inner`` computes them (before the token
    rule), and the tile's ``shift``: with the folded softcap alone (CAP_MAX) just
    ``tanh(q.k * scale / softcap)``, the cap multiplying in the row max and inside exp2;
    otherwise ``_log2_scores``. The causal ALiBi's column term ``alibi2 * (u - R)`` (R = ``ref``,
    the warpgroup's first query position) is split in two: ``acol = alibi2 * (u - start_n)``,
    the same vector every step (made once, added with the scale's FMA), and the step's scalar
    ``shift = alibi2 * (start_n - R)``, which ``_tile_max`` adds to the row max and
    ``_tile_exp`` takes out of it inside exp2 (the scores themselves leave it out). Per score
    that is the FMA alone, where the whole term took a conversion, a multiply and an add per
    column and step. Without it the shift is 0 and unused.

    HAS_ALIBI 4 (the abs form split by sides, launch.HOPPER_FWD_ALIBI_SIDES): a tile whose keys
    all lie at or before all its queries has ``-slope |t - u| = slope (u - t)``, one whose keys
    all lie at or after them ``slope (t - u)``: the column form with the sign of ``acol`` (an
    FMA a score) and a ``[ROWS]`` shift ``+-(alibi2 (start_n - R) - arow)``, ``arow = alibi2 (t -
    R)`` (made once). A tile across the diagonal takes the abs form (shift 0). Any sign of the
    slope: each side's form is exact, not a bound."""
    CAP_MAX: gl.constexpr = (HAS_SOFTCAP == 2) and (not HAS_ALIBI)
    if CAP_MAX:
        return _tanh(s * qk_scale, _UPCAST, _PRECISION), 0.0
    elif HAS_ALIBI == 3:
        # the abs form in raw-score units (launch.HOPPER_FWD_ALIBI_RAW; no softcap, qk_scale > 0):
        # q.k - (slope / qk_scale) |t - u| with alibi2 = slope log2(e) / qk_scale, |t - u| =
        # |(t - start_n) - (u - start_n)| from the step's [ROWS] vector and acol = [0, BLOCK_N)
        # (made once): a subtract and an FMA a score, any sign of the slope; _tile_max and
        # _tile_exp then scale as for plain scores
        d = (rows_pos - start_n).to(gl.float32)[:, None] - acol[None, :]
        return s - alibi2 * gl.abs(d), 0.0
    elif HAS_ALIBI == 4:
        # without softcap (launch._hopper_fwd_alibi): each branch scales the raw scores itself,
        # the scale's multiply and acol in one FMA
        gl.static_assert(not HAS_SOFTCAP)
        side = alibi2 * (start_n - ref).to(gl.float32) - arow            # alibi2 (start_n - t)
        if start_n + BLOCK_N <= ref + 1:            # keys at or before every query
            s2 = s * qk_scale + acol[None, :]
        elif start_n + 1 >= ref + arow.shape[0]:    # keys at or after every query
            s2 = s * qk_scale - acol[None, :]
            side = -side
        else:
            # across the diagonal: -slope |t - u| = -sign(slope) |alibi2 (t - start_n) - acol|
            z = alibi2 * (rows_pos - start_n).to(gl.float32)
            sign = gl.where(alibi2 < 0.0, -1.0, 1.0)
            s2 = s * qk_scale - sign * gl.abs(z[:, None] - acol[None, :])
            side = gl.zeros_like(side)
        return s2, side
    elif HAS_ALIBI == 2:
        s2, shift, _ = _column_split_scores(s, qk_scale, softcap2, alibi2, acol, start_n, ref,
                                            HAS_SOFTCAP, _UPCAST, _PRECISION)
        return s2, shift
    else:
        cols_pos = start_n + gl.arange(0, BLOCK_N, col_layout)
        s2, _ = _log2_scores(s, qk_scale, softcap2, alibi2, ref, rows_pos[:, None], cols_pos[None, :],
                             HAS_SOFTCAP, HAS_ALIBI, _UPCAST, _PRECISION)
        return s2, 0.0


@gluon.jit
def _alibi_cols(alibi2, col_layout: gl.constexpr, BLOCK_N: gl.constexpr, HAS_ALIBI: gl.constexpr):
    """``acol`` of ``_fwd_scores``: ``alibi2 * (u - start_n)`` for the causal ALiBi, ``u -
    start_n`` for the raw-unit abs form (HAS_ALIBI 3), else 0."""
    if HAS_ALIBI == 2 or HAS_ALIBI == 4:
        return alibi2 * gl.arange(0, BLOCK_N, col_layout).to(gl.float32)
    elif HAS_ALIBI == 3:
        return gl.arange(0, BLOCK_N, col_layout).to(gl.float32)
    else:
        return 0.0


@gluon.jit
def _tile_max(s, shift, qk_scale, softcap2, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr):
    """Row max of a tile in log2 units: raw scores are scaled after the max (``qk_scale`` > 0),
    CAP_MAX's tanh values times the cap (> 0), modified scores as they are, plus the causal
    ALiBi's ``shift`` (``_fwd_scores``)."""
    if (HAS_SOFTCAP == 2) and (not HAS_ALIBI):
        return gl.max(s, 1) * softcap2
    elif HAS_ALIBI == 2 or HAS_ALIBI == 4:
        return gl.max(s, 1) + shift
    elif HAS_ALIBI == 3:
        return gl.max(s, 1) * qk_scale
    elif HAS_SOFTCAP or HAS_ALIBI:
        return gl.max(s, 1)
    else:
        return gl.max(s, 1) * qk_scale


@gluon.jit
def _tile_exp(s, m_use, shift, qk_scale, softcap2, HAS_SOFTCAP: gl.constexpr,
              HAS_ALIBI: gl.constexpr):
    """``2^(score - max)``: one FMA inside exp2 for raw scores and CAP_MAX's tanh values; the
    causal ALiBi's ``shift`` comes off the row max (one subtract per row, not per score)."""
    if (HAS_SOFTCAP == 2) and (not HAS_ALIBI):
        return gl.exp2(softcap2 * s - m_use[:, None])
    elif HAS_ALIBI == 2 or HAS_ALIBI == 4:
        return gl.exp2(s - (m_use - shift)[:, None])
    elif HAS_ALIBI == 3:
        return gl.exp2(s * qk_scale - m_use[:, None])
    elif HAS_SOFTCAP or HAS_ALIBI:
        return gl.exp2(s - m_use[:, None])
    else:
        return gl.exp2(s * qk_scale - m_use[:, None])


@gluon.jit
def _release(bar, RELEASE: gl.constexpr):
    """A consumer warpgroup's release of a ring slot whose products have completed (each thread
    waited for them). RELEASE: every thread arrives (``cp.async.mbarrier.arrive.noinc``: with no
    copies of its own outstanding, at once), the barrier counting 128 arrivals a warpgroup, as
    CUTLASS's consumer_release arrives. Else one thread arrives (``mbarrier.arrive``), which
    Triton 3.6's shared-memory barrier analysis takes for a write of all shared memory: it puts
    a ``bar.sync`` of the warpgroup before each such arrive (sm_90 SASS of the d=128 forward's
    step loop: 3 ``BAR.SYNC`` with one thread's arrives, 1 with every thread's and K's and V's
    barriers in allocations of their own; launch.HOPPER_RELEASE_ALL)."""
    if RELEASE:
        async_copy.mbarrier_arrive(bar, increment_count=False)
    else:
        mbarrier.arrive(bar)


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready, kv_empty, v_empty, tile_slots,
              Out, o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed,
              rng_offset, num_m_tiles, num_programs, stride_ob, stride_oh, stride_om, stride_kpm_b, num_heads,
              lse_len, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, window_left, window_right,
              qk_scale, softcap2, stride_alibi_b, drop_threshold, drop_scale,
              BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
              HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, NUM_WARPS: gl.constexpr,
              CAUSAL: gl.constexpr, HAS_WL: gl.constexpr, HAS_WR: gl.constexpr,
              HAS_KPM: gl.constexpr, PER_SEQ: gl.constexpr, PACKED: gl.constexpr,
              HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, HAS_DROPOUT: gl.constexpr,
              REVERSE_M: gl.constexpr, WALK: gl.constexpr, SCHEDULED: gl.constexpr, PERSISTENT: gl.constexpr,
              OVERLAP_PV: gl.constexpr, RESCALE: gl.constexpr, NUM_CONSUMERS: gl.constexpr,
              WG: gl.constexpr, DYNAMIC: gl.constexpr, OUT_TMA: gl.constexpr, RELEASE: gl.constexpr):
    if PERSISTENT and DYNAMIC:
        # the programs the producer publishes, each with its Q (see _producer); -1 ends
        step = 0
        tile_i = 0
        Q_BUFS: gl.constexpr = q_bar.shape[0]
        mbarrier.wait(q_bar.index(0), 0)
        v = _read_tile(tile_slots, 0, NUM_WARPS, DYNAMIC)
        while v >= 0:
            step += _consume_tile(q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready,
                                  kv_empty, v_empty, Out, o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM,
                                  ALIBI, schedule, seed, rng_offset, num_m_tiles, stride_ob,
                                  stride_oh, stride_om, stride_kpm_b, num_heads, lse_len, q_len,
                                  k_len, q_pos, k_pos, nq, table_heads_gt1, window_left,
                                  window_right, qk_scale, softcap2, stride_alibi_b,
                                  drop_threshold, drop_scale, v, step, tile_i, BLOCK, BLOCK_M,
                                  BLOCK_N, HEAD_DIM, NUM_STAGES, NUM_WARPS, CAUSAL, HAS_WL,
                                  HAS_WR, HAS_KPM, PER_SEQ, PACKED, HAS_SOFTCAP, HAS_ALIBI,
                                  HAS_DROPOUT, REVERSE_M, WALK, SCHEDULED, OVERLAP_PV, RESCALE, NUM_CONSUMERS,
                                  WG, True, OUT_TMA, RELEASE)
            tile_i += 1
            qb = tile_i % Q_BUFS
            mbarrier.wait(q_bar.index(qb), (tile_i // Q_BUFS) & 1)
            v = _read_tile(tile_slots, qb, NUM_WARPS, DYNAMIC)
    elif PERSISTENT:
        # the producer's programs, in its order (see _producer)
        step = 0
        tile_i = 0
        for v in range(gl.program_id(0), num_programs, gl.num_programs(0)):
            step += _consume_tile(q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready,
                                  kv_empty, v_empty, Out, o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM,
                                  ALIBI, schedule, seed, rng_offset, num_m_tiles, stride_ob,
                                  stride_oh, stride_om, stride_kpm_b, num_heads, lse_len, q_len,
                                  k_len, q_pos, k_pos, nq, table_heads_gt1, window_left,
                                  window_right, qk_scale, softcap2, stride_alibi_b,
                                  drop_threshold, drop_scale, v, step, tile_i, BLOCK, BLOCK_M,
                                  BLOCK_N, HEAD_DIM, NUM_STAGES, NUM_WARPS, CAUSAL, HAS_WL,
                                  HAS_WR, HAS_KPM, PER_SEQ, PACKED, HAS_SOFTCAP, HAS_ALIBI,
                                  HAS_DROPOUT, REVERSE_M, WALK, SCHEDULED, OVERLAP_PV, RESCALE, NUM_CONSUMERS,
                                  WG, False, OUT_TMA, RELEASE)
            tile_i += 1
    else:
        _consume_tile(q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready, kv_empty, v_empty, Out,
                      o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed,
                      rng_offset, num_m_tiles, stride_ob, stride_oh, stride_om, stride_kpm_b,
                      num_heads, lse_len, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1,
                      window_left, window_right, qk_scale, softcap2, stride_alibi_b,
                      drop_threshold, drop_scale, _own_program(), 0, 0, BLOCK, BLOCK_M, BLOCK_N,
                      HEAD_DIM, NUM_STAGES, NUM_WARPS, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ,
                      PACKED, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, REVERSE_M, WALK, SCHEDULED,
                      OVERLAP_PV, RESCALE, NUM_CONSUMERS, WG, False, OUT_TMA, RELEASE)


# 2^f on [-0.5, 0.5], degree 3, minimax in relative error (7.5e-5; 1.1e-4 evaluated in fp32)
_EXP2_C0 = gl.constexpr(0.9999280571937561)
_EXP2_C1 = gl.constexpr(0.6932609677314758)
_EXP2_C2 = gl.constexpr(0.2426111251115799)
_EXP2_C3 = gl.constexpr(0.0551716685295105)


@gluon.jit
def _exp2_fma(x):
    """``2^x`` on the FMA and integer pipes instead of the MUFU (x at most 127; below about
    -127.5, -inf included, exactly 0): x = j + f with j the nearest integer (the 1.5 * 2^23
    rounding trick), 2^f by a degree-3 polynomial (relative error 1.1e-4, under bfloat16's
    3.9e-3), j added to its exponent as an integer (``bits(t) * 2^23`` is ``j << 23`` modulo
    2^32), a negative result's bits clamped to +0. Nine instructions where the MUFU takes one,
    for a share of a tile when the MUFU is the forward's bottleneck (the softcap's tanh and
    the exponential both run there: ``_exp2_mixed``)."""
    x = gl.maximum(x, -128.0)
    t = x + 12582912.0
    f = x - (t - 12582912.0)
    p = gl.fma(gl.fma(gl.fma(f, _EXP2_C3, _EXP2_C2), f, _EXP2_C1), f, _EXP2_C0)
    bits = p.to(gl.int32, bitcast=True) + t.to(gl.int32, bitcast=True) * 8388608
    return gl.maximum(bits, 0).to(gl.float32, bitcast=True)


@gluon.jit
def _exp2_mixed(x, layout: gl.constexpr, ROWS: gl.constexpr, COLS: gl.constexpr,
                SHARE: gl.constexpr):
    """``2^x`` of a [ROWS, COLS] wgmma accumulator tile, ``1/SHARE`` of its columns on the FMA
    pipe (``_exp2_fma``) and the rest on the MUFU (SHARE 0: all there). The split takes
    columns by register: SHARE 2 the odd columns (a thread holds columns 2t', 2t'+1 of each
    group of 8), SHARE 4 the odd columns of every other group of 8; the reshapes, splits and
    joins relabel registers only (``assert_trivial``)."""
    if SHARE == 0:
        return gl.exp2(x)
    elif SHARE == 2:
        return gl.convert_layout(_exp2_odd_on_fma(x, ROWS, COLS), layout, assert_trivial=True)
    else:
        gl.static_assert(SHARE == 4)
        # columns c = 16 i + 8 g + r: g (a register bit) last; the odd groups as SHARE 2
        even_g, odd_g = gl.split(gl.permute(gl.reshape(x, [ROWS, COLS // 16, 2, 8]), (0, 1, 3, 2)))
        odd_g = _exp2_odd_on_fma(gl.reshape(odd_g, [ROWS, COLS // 2]), ROWS, COLS // 2)
        odd_g = gl.convert_layout(gl.reshape(odd_g, [ROWS, COLS // 16, 8]), even_g.type.layout,
                                  assert_trivial=True)
        y = gl.reshape(gl.permute(gl.join(gl.exp2(even_g), odd_g), (0, 1, 3, 2)), [ROWS, COLS])
        return gl.convert_layout(y, layout, assert_trivial=True)


@gluon.jit
def _exp2_odd_on_fma(x, ROWS: gl.constexpr, COLS: gl.constexpr):
    """``2^x`` of a [ROWS, COLS] tile whose columns pair up in registers (2k, 2k + 1): the even
    ones on the MUFU, the odd ones on the FMA pipe (``_exp2_fma``); a relabeling otherwise."""
    a, b = gl.split(gl.reshape(x, [ROWS, COLS // 2, 2]))
    return gl.reshape(gl.join(gl.exp2(a), _exp2_fma(b)), [ROWS, COLS])


@gluon.jit
def _consume_tile(q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready, kv_empty, v_empty,
                  Out, o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed,
                  rng_offset, num_m_tiles, stride_ob, stride_oh, stride_om, stride_kpm_b,
                  num_heads, lse_len, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1,
                  window_left, window_right, qk_scale, softcap2, stride_alibi_b, drop_threshold,
                  drop_scale, v, step, tile_i,
                  BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, NUM_WARPS: gl.constexpr,
                  CAUSAL: gl.constexpr, HAS_WL: gl.constexpr, HAS_WR: gl.constexpr,
                  HAS_KPM: gl.constexpr, PER_SEQ: gl.constexpr, PACKED: gl.constexpr,
                  HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, HAS_DROPOUT: gl.constexpr,
                  REVERSE_M: gl.constexpr, WALK: gl.constexpr, SCHEDULED: gl.constexpr, OVERLAP_PV: gl.constexpr,
                  RESCALE: gl.constexpr, NUM_CONSUMERS: gl.constexpr, WG: gl.constexpr, Q_WAITED: gl.constexpr,
                  OUT_TMA: gl.constexpr, RELEASE: gl.constexpr):
    """One query tile of one consumer warpgroup (its 64 rows): the K/V steps from ring
    position ``step``, Q released (``q_empty``) once its last product has completed, then the
    output and LSE stored. Returns the number of K/V steps the producer issued for the tile
    (with three consumers a warpgroup's own row may be a shorter prefix of them: it lets the
    rest pass, see ``_walked_row``)."""
    SUB: gl.constexpr = BLOCK // BLOCK_N
    ROWS: gl.constexpr = BLOCK_M // NUM_CONSUMERS          # this warpgroup's query rows: 64
    # KV_SPLIT (launch.HOPPER_FWD_KV_SPLIT): a slot's K is released once the step's Q K^T has
    # completed, its V once P V has (kv_empty holds K's barriers, v_empty V's); else both at once
    KV_SPLIT: gl.constexpr = v_empty.shape[0] == NUM_STAGES
    # V's release barriers (KV_SPLIT: an allocation of their own, so that Triton's shared-memory
    # barrier analysis sees no two arrives of a step on one allocation)
    if KV_SPLIT:
        ve = v_empty
    else:
        ve = kv_empty
    # the softcap's code (tiles.py), and FIXED: the folded softcap's scores are bounded, so the
    # softmax subtracts one fixed shift (tiles.py ``_softcap_shift``) instead of a running row
    # max (launch._hopper_softcap: bfloat16, no ALiBi, a cap whose scores span at most 180 in
    # log2 units). No row max, no rescale of the output, nothing on the path from S to P but
    # the tanh and the exponential.
    SOFTCAP: gl.constexpr = HAS_SOFTCAP % 10
    FIXED: gl.constexpr = HAS_SOFTCAP % 100 >= 10
    gl.static_assert((not FIXED) or ((SOFTCAP == 2) and (not HAS_ALIBI)))
    # with FIXED: 1 / EXP2_SHARE of the exponentials on the FMA pipe (_exp2_mixed; the hundreds
    # of HAS_SOFTCAP, launch.HOPPER_SOFTCAP_EXP2_FMA)
    EXP2_SHARE: gl.constexpr = HAS_SOFTCAP // 100
    gl.static_assert(EXP2_SHARE == 0 or FIXED)
    dtype: gl.constexpr = k_smem.dtype
    Q_BUFS: gl.constexpr = q_bar.shape[0]
    qb = tile_i % Q_BUFS
    q_tile = q_smem.index(qb * NUM_CONSUMERS + WG)
    # a warpgroup of 4 warps, 16 rows each
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NUM_WARPS, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    col_layout: gl.constexpr = gl.SliceLayout(0, s_layout)
    orow_layout: gl.constexpr = gl.SliceLayout(1, o_layout)
    ocol_layout: gl.constexpr = gl.SliceLayout(0, o_layout)

    pid_m, off_h, ts, off_b = _program_at(v, schedule, num_m_tiles, num_heads, REVERSE_M,
                                          SCHEDULED, PER_SEQ, PACKED)
    q_start, q_lo, q_hi, k_start, k_lo, k_hi, start_m, row, tile_ok = _geometry(
        seqs, ts, pid_m, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, off_h, BLOCK, BLOCK_M,
        PER_SEQ)
    first = start_m + WG * ROWS
    wg_row, wg_ok = _wg_row(row, start_m, first, q_lo, q_hi, tile_ok, BLOCK, NUM_CONSUMERS)
    lo = gl.load(fwd_ptr + wg_row)
    hi = gl.where(wg_ok, gl.load(fwd_ptr + wg_row + 1), lo)
    n_full = gl.where(wg_ok, gl.load(fwd_nfull + wg_row), 0)
    trips = (hi - lo) * SUB
    full_trips = n_full * SUB
    if NUM_CONSUMERS == 2:
        walked = trips
    else:
        # the producer's steps: those of the tile's longest row
        w_row = _walked_row(row, start_m, q_hi, tile_ok, BLOCK, NUM_CONSUMERS)
        walked = gl.where(tile_ok, gl.load(fwd_ptr + w_row + 1) - gl.load(fwd_ptr + w_row), 0) * SUB
    j0 = k_lo // BLOCK
    k_row0 = k_start - k_lo
    q_row0 = q_start - q_lo                                                 # tensor row = pos + q_row0
    kpm_row = off_b.to(gl.int64) * stride_kpm_b
    rows_pos = first + gl.arange(0, ROWS, row_layout)                        # [ROWS]
    alibi2 = _alibi2(ALIBI, off_b, off_h, stride_alibi_b, HAS_ALIBI, _NATURAL)
    if HAS_ALIBI == 3:
        alibi2 = alibi2 / qk_scale          # the raw-unit abs form's slope (qk_scale > 0)
    acol = _alibi_cols(alibi2, col_layout, BLOCK_N, HAS_ALIBI)
    if HAS_ALIBI == 4:
        arow = alibi2 * gl.arange(0, ROWS, row_layout).to(gl.float32)      # alibi2 (t - first)
    else:
        arow = 0.0
    bh = off_b * num_heads + off_h
    row0 = first + q_row0                                                   # first tensor row

    if FIXED:
        cap_shift = _softcap_shift(softcap2)
        m_i = gl.full([ROWS], 0.0, gl.float32, row_layout) + cap_shift
    else:
        cap_shift = 0.0
        m_i = gl.full([ROWS], float("-inf"), gl.float32, row_layout)
    l_i = gl.zeros([ROWS], gl.float32, row_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
    s_zero = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)

    if WALK == 3:           # (its loads issued before the wait for Q)
        diag = _diagonal_trip(fwd_idx, lo, trips, j0, start_m + BLOCK_M // 2, BLOCK, BLOCK_N, NUM_WARPS)
    else:
        diag = 0
    if not Q_WAITED:        # (the run-time handout waited already, to read the program)
        mbarrier.wait(q_bar.index(qb), (tile_i // Q_BUFS) & 1)
    if trips > 0:
        w0 = _walk(0, trips, WALK, diag)    # the trip of the first step
        mbarrier.wait(k_ready.index(step % NUM_STAGES), (step // NUM_STAGES) & 1)
        s = warpgroup_mma(q_tile, k_smem.index(step % NUM_STAGES).permute((1, 0)), s_zero,
                          use_acc=False, is_async=True)
        s = warpgroup_mma_wait(0, deps=(s, ))
        if KV_SPLIT:
            _release(kv_empty.index(step % NUM_STAGES), RELEASE)
        # softcap / ALiBi before the token rule, as fwd.py (a masked score stays -inf)
        if HAS_SOFTCAP or HAS_ALIBI:
            s, shift0 = _fwd_scores(s, _key_start(fwd_idx, lo, w0, j0, BLOCK, BLOCK_N), rows_pos,
                                    first, qk_scale, softcap2, alibi2, acol, arow, col_layout,
                                    BLOCK_N, SOFTCAP, HAS_ALIBI)
        else:
            shift0 = 0.0
        if w0 >= full_trips:
            s = _masked(s, _key_start(fwd_idx, lo, w0, j0, BLOCK, BLOCK_N), rows_pos, q_lo, q_hi, k_lo,
                        k_hi, KPM, kpm_row, k_row0, window_left, window_right, col_layout,
                        BLOCK_N, CAUSAL, HAS_WL, HAS_WR, HAS_KPM)
        if FIXED:
            e = _exp2_mixed(softcap2 * s - cap_shift, s_layout, ROWS, BLOCK_N, EXP2_SHARE)
        else:
            m_i = _tile_max(s, shift0, qk_scale, softcap2, SOFTCAP, HAS_ALIBI)
            m_use = gl.where(m_i == float("-inf"), 0.0, m_i)
            e = _tile_exp(s, m_use, shift0, qk_scale, softcap2, SOFTCAP, HAS_ALIBI)  # [ROWS, BLOCK_N]
        l_i = gl.sum(e, 1)
        if HAS_DROPOUT:
            # l_i sums every probability; only the values see the dropout (its scale at the end)
            e = _dropped(e, seed, rng_offset, bh, row0,
                         _key_start(fwd_idx, lo, w0, j0, BLOCK, BLOCK_N), drop_threshold,
                         s_layout, ROWS, BLOCK_N, HAS_DROPOUT)
        p = gl.convert_layout(e.to(dtype), p_layout)
        for t in range(1, trips):
            w = _walk(t, trips, WALK, diag)
            st = (step + t) % NUM_STAGES
            prev = (step + t - 1) % NUM_STAGES
            mbarrier.wait(k_ready.index(st), ((step + t) // NUM_STAGES) & 1)
            s = warpgroup_mma(q_tile, k_smem.index(st).permute((1, 0)), s_zero, use_acc=False,
                              is_async=True)
            # O += P V of the previous step runs while this step's softmax does
            mbarrier.wait(v_ready.index(prev), ((step + t - 1) // NUM_STAGES) & 1)
            acc = warpgroup_mma(p, v_smem.index(prev), acc, is_async=True)
            s = warpgroup_mma_wait(1, deps=(s, ))
            if KV_SPLIT:
                _release(kv_empty.index(st), RELEASE)
            if HAS_SOFTCAP or HAS_ALIBI:
                s, shift = _fwd_scores(s, _key_start(fwd_idx, lo, w, j0, BLOCK, BLOCK_N), rows_pos,
                                       first, qk_scale, softcap2, alibi2, acol, arow, col_layout,
                                       BLOCK_N, SOFTCAP, HAS_ALIBI)
            else:
                shift = 0.0
            if w >= full_trips:
                start_n = _key_start(fwd_idx, lo, w, j0, BLOCK, BLOCK_N)
                s = _masked(s, start_n, rows_pos, q_lo, q_hi, k_lo, k_hi, KPM, kpm_row, k_row0,
                            window_left, window_right, col_layout, BLOCK_N, CAUSAL, HAS_WL,
                            HAS_WR, HAS_KPM)
            # OVERLAP_PV: the softmax in a branch of its own (its condition always holds, but
            # the compiler cannot know it), so that the wait for P V below starts a later basic
            # block: ptxas otherwise moves that wait, the release barrier and the slot's arrive
            # to the top of the softmax's block, and P_{t-1} V_{t-1} no longer overlaps the
            # exponentials (the sm_90 SASS of tests/test_hopper.py)
            if (t + n_full >= 0) or (not OVERLAP_PV):
                if FIXED:
                    e = _exp2_mixed(softcap2 * s - cap_shift, s_layout, ROWS, BLOCK_N, EXP2_SHARE)
                    l_i = l_i + gl.sum(e, 1)
                else:
                    m_new = gl.maximum(m_i, _tile_max(s, shift, qk_scale, softcap2, SOFTCAP,
                                                      HAS_ALIBI))
                    if RESCALE > 0:
                        m_new = gl.where(m_new > m_i + RESCALE, m_new, m_i)
                    # a row may have seen nothing yet: subtract 0 instead of -inf (avoids inf - inf)
                    m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
                    e = _tile_exp(s, m_use, shift, qk_scale, softcap2, SOFTCAP, HAS_ALIBI)
                    alpha = gl.exp2(m_i - m_use)
                    l_i = l_i * alpha + gl.sum(e, 1)
                    m_i = m_new
            else:       # never runs
                e = s
                alpha = l_i
            acc = warpgroup_mma_wait(0, deps=(acc, ))
            _release(ve.index(prev), RELEASE)
            if not FIXED:
                alpha_o = gl.convert_layout(alpha, orow_layout)
                if RESCALE > 0:
                    acc = _rescaled(acc, alpha_o, _warp_moved(alpha_o))
                else:
                    acc = acc * alpha_o[:, None]
            if HAS_DROPOUT:
                e = _dropped(e, seed, rng_offset, bh, row0,
                             _key_start(fwd_idx, lo, w, j0, BLOCK, BLOCK_N), drop_threshold,
                             s_layout, ROWS, BLOCK_N, HAS_DROPOUT)
            p = gl.convert_layout(e.to(dtype), p_layout)
        last = (step + trips - 1) % NUM_STAGES
        mbarrier.wait(v_ready.index(last), ((step + trips - 1) // NUM_STAGES) & 1)
        acc = warpgroup_mma(p, v_smem.index(last), acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=(acc, ))
        _release(ve.index(last), RELEASE)
    # every product that read this warpgroup's Q has completed: the producer may load the
    # next tile's while this one's output is written (OUT_TMA: the Q slot stages the output,
    # released once the copy engine has read it, below)
    if not OUT_TMA:
        mbarrier.arrive(q_empty.index(qb))
    # steps of a longer row of the tile (three consumers): released once their K has landed,
    # which the producer copies only after the slot's previous lap was released by all
    for t in range(trips, walked):
        slot = (step + t) % NUM_STAGES
        lap = ((step + t) // NUM_STAGES) & 1
        mbarrier.wait(k_ready.index(slot), lap)
        _release(kv_empty.index(slot), RELEASE)
        if KV_SPLIT:
            mbarrier.wait(v_ready.index(slot), lap)
            _release(ve.index(slot), RELEASE)

    # rows that saw no key: output 0, lse -inf
    empty = l_i == 0.0
    l_safe = gl.where(empty, 1.0, l_i)
    lse2 = m_i + gl.log2(l_safe)
    if HAS_ALIBI == 2:
        # the row term of the causal ALiBi bias the scores left out (_log2_scores), R = first
        lse2 = lse2 - alibi2 * (rows_pos - first).to(gl.float32)
    lse = gl.where(empty, float("-inf"), lse2 * LN2)
    if HAS_DROPOUT:
        out = acc * gl.convert_layout(drop_scale / l_safe, orow_layout)[:, None]
    else:
        out = acc / gl.convert_layout(l_safe, orow_layout)[:, None]
    row_ok = (rows_pos >= q_lo) & (rows_pos < q_hi)
    if OUT_TMA:
        # every row of the warpgroup's 64 is the tile's: the output goes through its Q slot
        # (free: its last product has completed) and one bulk copy, as FlashAttention-3/4
        # store it. Written from the registers, a [64, d] tile took 32 4-byte stores a thread,
        # each touching 8 rows (run28: 2.3 us a tile at d=128, more than a K/V step).
        # A partial block (another document's or past a sequence's rows) keeps the masked stores.
        whole = (first >= q_lo) & (first + ROWS <= q_hi)
    else:
        whole = False
    if whole:
        _bulk_store(q_tile, out.to(dtype), o_desc, off_b, off_h, first + q_row0, ROWS, HEAD_DIM)
    else:
        orows = first + gl.arange(0, ROWS, orow_layout)
        orow_ok = (orows >= q_lo) & (orows < q_hi)
        offs_d = gl.arange(0, HEAD_DIM, ocol_layout)
        o_ptrs = Out + off_b.to(gl.int64) * stride_ob + off_h.to(gl.int64) * stride_oh \
            + (orows + q_row0).to(gl.int64)[:, None] * stride_om + offs_d[None, :]
        gl.store(o_ptrs, out.to(dtype), mask=orow_ok[:, None])
    lse_ptrs = LSE + (off_b * num_heads + off_h).to(gl.int64) * lse_len + (rows_pos + q_row0)
    gl.store(lse_ptrs, lse, mask=row_ok)
    if OUT_TMA:
        tma.store_wait(0)
        mbarrier.arrive(q_empty.index(qb))
    return walked


@gluon.jit
def _bulk_store(tile_smem, value, desc, off_b, off_h, row, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr):
    """``value`` ([ROWS, HEAD_DIM], registers) to rows ``row..row+ROWS`` of head ``off_h`` of
    batch ``off_b`` through ``tile_smem`` (a free [ROWS, HEAD_DIM] slot in the descriptor's
    swizzle) and one bulk copy (the launch.py OUT_TMA stores). The copy is left in flight: wait
    for it (``tma.store_wait``) before the slot is written again or released."""
    tile_smem.store(value)
    fence_async_shared()
    tma.async_copy_shared_to_global(desc, [off_b, off_h, row, 0],
                                    tile_smem.reshape([1, 1, ROWS, HEAD_DIM]))


@gluon.jit(do_not_specialize=["q_len", "k_len", "q_pos", "k_pos", "nq", "nk", "seed", "rng_offset"])
def _hopper_fwd_kernel(q_desc, k_desc, v_desc, Out, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI,
                       schedule, seed, rng_offset, tile_counter, o_desc, num_m_tiles, num_programs, stride_ob, stride_oh, stride_om,
                       stride_kpm_b, num_heads, group_size, lse_len, q_len, k_len, q_pos, k_pos, nq,
                       nk, table_heads_gt1, window_left, window_right, qk_scale, softcap2,
                       stride_alibi_b, drop_threshold, drop_scale,
                       BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                       HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
                       CAUSAL: gl.constexpr, HAS_WL: gl.constexpr, HAS_WR: gl.constexpr,
                       HAS_KPM: gl.constexpr, PER_SEQ: gl.constexpr, PACKED: gl.constexpr,
                       HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, HAS_DROPOUT: gl.constexpr,
                       REVERSE_M: gl.constexpr, SCHEDULED: gl.constexpr,
                       CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr,
                       PERSISTENT: gl.constexpr = False, OVERLAP_PV: gl.constexpr = False,
                       NUM_CONSUMERS: gl.constexpr = 2, DYNAMIC: gl.constexpr = False,
                       RESCALE: gl.constexpr = 0.0, WALK: gl.constexpr = 0, OUT_TMA: gl.constexpr = False,
                       KV_SPLIT: gl.constexpr = False, Q_BUFS: gl.constexpr = 1,
                       RELEASE: gl.constexpr = False):
    # two consumer warpgroups share a 128-query tile inside one table block; three share a
    # 192-query tile across two blocks, each 64-query third inside one (launch.py chooses
    # three only where every row of such a pair is a prefix of the next, see _walked_row)
    gl.static_assert(NUM_CONSUMERS == 2 or NUM_CONSUMERS == 3)
    # a row's steps in another order (WALK): with three consumers a shorter row must be a
    # prefix of the walked one, which that breaks
    if WALK != 0:
        gl.static_assert(NUM_CONSUMERS == 2)
    gl.static_assert(BLOCK_M == 64 * NUM_CONSUMERS)
    if NUM_CONSUMERS == 2:
        gl.static_assert(BLOCK % BLOCK_M == 0)
    gl.static_assert(BLOCK % BLOCK_N == 0)
    NUM_WARPS: gl.constexpr = gl.num_warps()
    gl.static_assert(NUM_WARPS == 4)
    QROWS: gl.constexpr = 64
    dtype: gl.constexpr = k_desc.dtype
    # 2-D views of the descriptors' [1, 1, rows, d] blocks, as the matrix units read them
    tile_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dtype)
    q_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([QROWS, HEAD_DIM], dtype)
    q_smem = gl.allocate_shared_memory(dtype, [Q_BUFS * NUM_CONSUMERS, QROWS, HEAD_DIM], q_layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], tile_layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], tile_layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [Q_BUFS, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [Q_BUFS, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    # a slot's release: kv_empty's barrier, or (KV_SPLIT) K's there and V's in v_empty, an
    # allocation of its own (one unused barrier otherwise); the partitions read KV_SPLIT off
    # v_empty's shape
    kv_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES if KV_SPLIT else 1, 1], mbarrier.MBarrierLayout())
    # the program of the tile whose Q is in q_smem (DYNAMIC: handed out at run time), in
    # shared memory (1) or in the CTA's slots after the counter in global memory (2)
    if DYNAMIC == 2:
        tile_slots = tile_counter + 1 + gl.program_id(0) * Q_BUFS
    else:
        tile_slots = gl.allocate_shared_memory(gl.int32, [Q_BUFS, 1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    for i in gl.static_range(Q_BUFS):
        mbarrier.init(q_bar.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=NUM_CONSUMERS)    # every consumer warpgroup releases Q
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
    # every consumer releases a slot (RELEASE: each of its threads)
    RELEASES: gl.constexpr = NUM_CONSUMERS * (128 if RELEASE else 1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(kv_empty.index(i), count=RELEASES)
        if KV_SPLIT:
            mbarrier.init(v_empty.index(i), count=RELEASES)

    # the consumer warpgroups as separate partitions (64 query rows each): they synchronise
    # only through the K/V ring, so one's softmax overlaps the others' matrix products
    # (Gluon takes each partition's arguments as a literal tuple: written out per partition)
    if NUM_CONSUMERS == 2:
        gl.warp_specialize([
            (_consumer, (
                q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready, kv_empty, v_empty, tile_slots, Out,
                o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed, rng_offset,
                num_m_tiles, num_programs, stride_ob, stride_oh, stride_om, stride_kpm_b, num_heads,
                lse_len, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, window_left, window_right,
                qk_scale, softcap2, stride_alibi_b, drop_threshold, drop_scale, BLOCK, BLOCK_M,
                BLOCK_N, HEAD_DIM, NUM_STAGES, NUM_WARPS, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ,
                PACKED, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, REVERSE_M, WALK, SCHEDULED, PERSISTENT,
                OVERLAP_PV, RESCALE, NUM_CONSUMERS, 0, DYNAMIC, OUT_TMA, RELEASE)),
            (_consumer, (
                q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready, kv_empty, v_empty, tile_slots, Out,
                o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed, rng_offset,
                num_m_tiles, num_programs, stride_ob, stride_oh, stride_om, stride_kpm_b, num_heads,
                lse_len, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, window_left, window_right,
                qk_scale, softcap2, stride_alibi_b, drop_threshold, drop_scale, BLOCK, BLOCK_M,
                BLOCK_N, HEAD_DIM, NUM_STAGES, NUM_WARPS, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ,
                PACKED, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, REVERSE_M, WALK, SCHEDULED, PERSISTENT,
                OVERLAP_PV, RESCALE, NUM_CONSUMERS, 1, DYNAMIC, OUT_TMA, RELEASE)),
            (_producer, (
                q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready,
                kv_empty, v_empty, tile_slots, tile_counter, fwd_ptr, fwd_idx, fwd_nfull, seqs, schedule,
                num_m_tiles, num_programs, num_heads, group_size, q_len, k_len, q_pos, k_pos, nq,
                table_heads_gt1, BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, PER_SEQ, PACKED,
                REVERSE_M, WALK, SCHEDULED, PERSISTENT, NUM_CONSUMERS, DYNAMIC))],
            [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
    else:
        gl.warp_specialize([
            (_consumer, (
                q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready, kv_empty, v_empty, tile_slots, Out,
                o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed, rng_offset,
                num_m_tiles, num_programs, stride_ob, stride_oh, stride_om, stride_kpm_b, num_heads,
                lse_len, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, window_left, window_right,
                qk_scale, softcap2, stride_alibi_b, drop_threshold, drop_scale, BLOCK, BLOCK_M,
                BLOCK_N, HEAD_DIM, NUM_STAGES, NUM_WARPS, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ,
                PACKED, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, REVERSE_M, WALK, SCHEDULED, PERSISTENT,
                OVERLAP_PV, RESCALE, NUM_CONSUMERS, 0, DYNAMIC, OUT_TMA, RELEASE)),
            (_consumer, (
                q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready, kv_empty, v_empty, tile_slots, Out,
                o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed, rng_offset,
                num_m_tiles, num_programs, stride_ob, stride_oh, stride_om, stride_kpm_b, num_heads,
                lse_len, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, window_left, window_right,
                qk_scale, softcap2, stride_alibi_b, drop_threshold, drop_scale, BLOCK, BLOCK_M,
                BLOCK_N, HEAD_DIM, NUM_STAGES, NUM_WARPS, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ,
                PACKED, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, REVERSE_M, WALK, SCHEDULED, PERSISTENT,
                OVERLAP_PV, RESCALE, NUM_CONSUMERS, 1, DYNAMIC, OUT_TMA, RELEASE)),
            (_consumer, (
                q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready, kv_empty, v_empty, tile_slots, Out,
                o_desc, LSE, fwd_ptr, fwd_idx, fwd_nfull, seqs, KPM, ALIBI, schedule, seed, rng_offset,
                num_m_tiles, num_programs, stride_ob, stride_oh, stride_om, stride_kpm_b, num_heads,
                lse_len, q_len, k_len, q_pos, k_pos, nq, table_heads_gt1, window_left, window_right,
                qk_scale, softcap2, stride_alibi_b, drop_threshold, drop_scale, BLOCK, BLOCK_M,
                BLOCK_N, HEAD_DIM, NUM_STAGES, NUM_WARPS, CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ,
                PACKED, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT, REVERSE_M, WALK, SCHEDULED, PERSISTENT,
                OVERLAP_PV, RESCALE, NUM_CONSUMERS, 2, DYNAMIC, OUT_TMA, RELEASE)),
            (_producer, (
                q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, v_ready,
                kv_empty, v_empty, tile_slots, tile_counter, fwd_ptr, fwd_idx, fwd_nfull, seqs, schedule,
                num_m_tiles, num_programs, num_heads, group_size, q_len, k_len, q_pos, k_pos, nq,
                table_heads_gt1, BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, NUM_STAGES, PER_SEQ, PACKED,
                REVERSE_M, WALK, SCHEDULED, PERSISTENT, NUM_CONSUMERS, DYNAMIC))],
            [4, 4, 1], [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS])


# ------------------------------------------------------------------ backward: dK and dV
@gluon.jit
def _sequence(seqs, ts, q_len, k_len, q_pos, k_pos, nq, nk, PER_SEQ: gl.constexpr):
    """Columns of ``BlockLayout.seqs`` for table sequence ``ts``: (q_start, q_len, k_start,
    k_len, q_pos, k_pos, row_off, col_off, nq, nk); the scalars when the batch shares one."""
    if PER_SEQ:
        r = seqs + ts * 10
        return (gl.load(r), gl.load(r + 1), gl.load(r + 2), gl.load(r + 3), gl.load(r + 4),
                gl.load(r + 5), gl.load(r + 6), gl.load(r + 7), gl.load(r + 8), gl.load(r + 9))
    else:
        zero = ts * 0
        return zero, q_len + zero, zero, k_len + zero, q_pos + zero, k_pos + zero, zero, zero, \
            nq + zero, nk + zero


@gluon.jit
def _key_tile(schedule, num_n_tiles, num_kv_heads, seqs, q_len, k_len, q_pos, k_pos, nq, nk,
              BLOCK_N: gl.constexpr, PER_SEQ: gl.constexpr, PACKED: gl.constexpr,
              SCHEDULED: gl.constexpr):
    """(off_b, off_kvh, the sequence's columns, start_n, tile_ok) of a dK/dV program: key
    tile ``pid_n`` of (slot, kv head), aligned to absolute positions (bwd.py rules)."""
    if SCHEDULED:
        t = gl.load(schedule + gl.program_id(0))
        pid_n = t % num_n_tiles
        pid_skv = t // num_n_tiles
    else:
        pid_n = gl.program_id(0)
        pid_skv = gl.program_id(1)
    off_kvh = pid_skv % num_kv_heads
    ts, off_b = _slot_sequence(pid_skv // num_kv_heads, PER_SEQ, PACKED)
    q_start, q_len, k_start, k_len, q_lo, k_lo, row_off, col_off, nq, nk = _sequence(
        seqs, ts, q_len, k_len, q_pos, k_pos, nq, nk, PER_SEQ)
    start_n = (k_lo // BLOCK_N + pid_n) * BLOCK_N
    tile_ok = start_n < k_lo + k_len
    return off_b, off_kvh, q_start, q_lo, q_lo + q_len, k_start, k_lo, k_lo + k_len, col_off, nk, \
        start_n, tile_ok


@gluon.jit
def _column(bwd_ptr, bwd_nfull, col_off, off_h, table_heads_gt1, nk, start_n, k_lo, tile_ok,
            BLOCK: gl.constexpr):
    """(lo, hi, n_full) of the key block's column in the transposed tables, for query head off_h."""
    col = col_off + off_h * table_heads_gt1 * nk + start_n // BLOCK - k_lo // BLOCK
    col = gl.where(tile_ok, col, 0)
    lo = gl.load(bwd_ptr + col)
    hi = gl.where(tile_ok, gl.load(bwd_ptr + col + 1), lo)
    n_full = gl.where(tile_ok, gl.load(bwd_nfull + col), 0)
    return lo, hi, n_full


@gluon.jit
def _bwd_producer(q_desc, k_desc, v_desc, do_desc, lse2_desc, delta_desc, LSE2, Delta, q_smem,
                  do_smem, k_smem, v_smem, lse2_smem, delta_smem, kv_bar, ready, empty, bwd_ptr,
                  bwd_idx, bwd_nfull,
                  seqs, schedule, num_n_tiles, num_heads, num_kv_heads, lse_len, q_len, k_len,
                  q_pos, k_pos, nq, nk, table_heads_gt1,
                  BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  HEAD_DIM: gl.constexpr, GROUP_SIZE: gl.constexpr, NUM_STAGES: gl.constexpr,
                  PER_SEQ: gl.constexpr, PACKED: gl.constexpr, SCHEDULED: gl.constexpr,
                  STATS_TMA: gl.constexpr):
    SUB: gl.constexpr = BLOCK // BLOCK_M
    HALF: gl.constexpr = BLOCK_N // 2
    off_b, off_kvh, q_start, q_lo, q_hi, k_start, k_lo, k_hi, col_off, nk, start_n, tile_ok = _key_tile(
        schedule, num_n_tiles, num_kv_heads, seqs, q_len, k_len, q_pos, k_pos, nq, nk, BLOCK_N,
        PER_SEQ, PACKED, SCHEDULED)
    q_row0 = q_start - q_lo
    i0 = q_lo // BLOCK
    # this key tile's K and V, one 64-row half per consumer warpgroup
    mbarrier.expect(kv_bar, 4 * k_desc.block_type.nbytes)
    for w in gl.static_range(2):
        row = start_n + k_start - k_lo + w * HALF
        tma.async_copy_global_to_shared(k_desc, [off_b, off_kvh, row, 0], kv_bar,
                                        k_smem.reshape([1, 1, BLOCK_N, HEAD_DIM]).slice(w * HALF,
                                                                                        HALF, 2))
        tma.async_copy_global_to_shared(v_desc, [off_b, off_kvh, row, 0], kv_bar,
                                        v_smem.index(w).reshape([1, 1, HALF, HEAD_DIM]))
    step = 0
    for g in range(GROUP_SIZE):
        off_h = off_kvh * GROUP_SIZE + g
        lo, hi, n_full = _column(bwd_ptr, bwd_nfull, col_off, off_h, table_heads_gt1, nk, start_n,
                                 k_lo, tile_ok, BLOCK)
        # the step's lse2 and delta: values of the statistics rows, (B, H, N) after a block of
        # padding (launch._stat_rows: a step may start up to a block before its sequence; with
        # the padding no copy starts at a negative coordinate)
        stat0 = (off_b * num_heads + off_h) * lse_len + BLOCK
        if STATS_TMA == 2:
            # 4-byte asynchronous copies (any alignment), 2 values a lane; rows outside the
            # sequence are zero-filled
            STAT_LAYOUT: gl.constexpr = gl.BlockedLayout([BLOCK_M // 32], [32], [1], [0])
            stat_offs = gl.arange(0, BLOCK_M, STAT_LAYOUT)
            lse2_head = LSE2 + (off_b * num_heads + off_h).to(gl.int64) * lse_len
            delta_head = Delta + (off_b * num_heads + off_h).to(gl.int64) * lse_len
        for t in range((hi - lo) * SUB):
            s = step % NUM_STAGES
            phase = ((step // NUM_STAGES) & 1) ^ 1       # the first lap passes fresh barriers
            q_block_idx = gl.load(bwd_idx + lo + t // SUB)
            row = (q_block_idx + i0) * BLOCK + (t % SUB) * BLOCK_M + q_row0
            mbarrier.wait(empty.index(s), phase)
            if STATS_TMA == 2:
                rows = row + stat_offs
                pos_ok = (rows - q_row0 >= q_lo) & (rows - q_row0 < q_hi)
                async_copy.async_copy_global_to_shared(lse2_smem.index(s), lse2_head + rows, mask=pos_ok)
                async_copy.async_copy_global_to_shared(delta_smem.index(s), delta_head + rows,
                                                       mask=pos_ok)
                # the barrier's phase waits for these copies too (the pending count is raised
                # first, so the expected arrivals do not change)
                async_copy.mbarrier_arrive(ready.index(s))
                mbarrier.expect(ready.index(s), 2 * q_desc.block_type.nbytes)
            elif STATS_TMA:
                mbarrier.expect(ready.index(s), 2 * q_desc.block_type.nbytes
                                + 2 * lse2_desc.block_type.nbytes)
                # rows outside the sequence (masked in the consumers) are read as they are:
                # the backward zero-fills the statistics first, so they are finite
                tma.async_copy_global_to_shared(lse2_desc, [stat0 + row], ready.index(s),
                                                lse2_smem.index(s))
                tma.async_copy_global_to_shared(delta_desc, [stat0 + row], ready.index(s),
                                                delta_smem.index(s))
            else:
                mbarrier.expect(ready.index(s), 2 * q_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(q_desc, [off_b, off_h, row, 0], ready.index(s),
                                            q_smem.index(s).reshape([1, 1, BLOCK_M, HEAD_DIM]))
            tma.async_copy_global_to_shared(do_desc, [off_b, off_h, row, 0], ready.index(s),
                                            do_smem.index(s).reshape([1, 1, BLOCK_M, HEAD_DIM]))
            step += 1


@gluon.jit
def _bwd_step_rows(bwd_idx, lo, t, i0, q_lo, q_hi, part, query_layout: gl.constexpr, BLOCK: gl.constexpr,
                   BLOCK_M: gl.constexpr, MMA_M: gl.constexpr):
    """The first query position of a dK/dV step's part ``part`` (its rows ``part * MMA_M`` on),
    the part's [MMA_M] query positions and which of them lie in the sequence (the table entry
    ``t // SUB`` of the key tile's column)."""
    SUB: gl.constexpr = BLOCK // BLOCK_M
    q_block_idx = gl.load(bwd_idx + lo + t // SUB)
    start_m = (q_block_idx + i0) * BLOCK + (t % SUB) * BLOCK_M + part * MMA_M
    rows_pos = start_m + gl.arange(0, MMA_M, query_layout)
    return start_m, rows_pos, (rows_pos >= q_lo) & (rows_pos < q_hi)


@gluon.jit
def _part(view, h, MMA_M: gl.constexpr, PARTS: gl.constexpr, DIM: gl.constexpr = 0):
    """Part ``h`` (MMA_M rows, or columns for DIM 1) of a step's shared-memory ``view``: the view
    itself when the step is one part."""
    if PARTS == 1:
        return view
    else:
        return view.slice(h * MMA_M, MMA_M, DIM)


@gluon.jit
def _visible_t(pT, keys_pos, key_ok, rows_pos, row_ok, window_left, window_right,
               CAUSAL: gl.constexpr, HAS_WL: gl.constexpr, HAS_WR: gl.constexpr):
    """The dK/dV kernel's probabilities ``pT`` [keys, queries] with the scores the token rule
    hides zeroed: keys and queries outside their sequences, the causal rule, the windows."""
    visible = key_ok[:, None] & row_ok[None, :]
    if CAUSAL:
        visible = visible & (keys_pos[:, None] <= rows_pos[None, :])
    if HAS_WL:
        visible = visible & (keys_pos[:, None] >= rows_pos[None, :] - window_left)
    if HAS_WR:
        visible = visible & (keys_pos[:, None] <= rows_pos[None, :] + window_right)
    return gl.where(visible, pT, 0.0)


@gluon.jit
def _bwd_consumer(q_smem, do_smem, k_smem, v_smem, lse2_smem, delta_smem, ds_smem, dq_smem, kv_bar,
                  ready, empty, ds_full, dq_full, dq_empty, LSE2, Delta, DK, DV, dk_desc, dv_desc,
                  bwd_ptr, bwd_idx, bwd_nfull, seqs, KPM, ALIBI, schedule,
                  seed, rng_offset, num_n_tiles, stride_dkb, stride_dkh, stride_kpm_b, num_heads,
                  num_kv_heads, lse_len, q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1,
                  window_left, window_right, sm_scale, qk_scale, softcap2, stride_alibi_b,
                  drop_threshold, drop_scale, BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  HEAD_DIM: gl.constexpr, GROUP_SIZE: gl.constexpr, NUM_STAGES: gl.constexpr,
                  CAUSAL: gl.constexpr, HAS_WL: gl.constexpr, HAS_WR: gl.constexpr,
                  HAS_KPM: gl.constexpr, PER_SEQ: gl.constexpr, PACKED: gl.constexpr,
                  HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, HAS_DROPOUT: gl.constexpr,
                  SCHEDULED: gl.constexpr, STATS_TMA: gl.constexpr, FUSED_DQ: gl.constexpr,
                  ROWS_LATE: gl.constexpr, DQ_ROWS: gl.constexpr, KV_REGS: gl.constexpr,
                  WG: gl.constexpr, OUT_TMA: gl.constexpr, RELEASE: gl.constexpr):
    SUB: gl.constexpr = BLOCK // BLOCK_M
    KEYS: gl.constexpr = BLOCK_N // 2          # this warpgroup's keys
    # the queries of a step's products: BLOCK_M (64) or, with 128-query steps (d=64,
    # launch.HOPPER_BWD_STEP_M), two parts of 64 that share the step's slot and meeting
    MMA_M: gl.constexpr = 64
    PARTS: gl.constexpr = BLOCK_M // MMA_M
    # a step's table entry read after its first products are issued (launch.HOPPER_BWD_ROWS_LATE);
    # without the statistics in shared memory the load of lse2 needs the rows first
    LATE: gl.constexpr = (ROWS_LATE & 1) != 0 and STATS_TMA != 0
    # ROWS_LATE bit 2 (launch.HOPPER_BWD_SPLIT_LOOPS): a column's full steps and its masked
    # steps (a table's masked blocks come after its full ones) as two loops, the second with
    # the masking written in, the first without it. In one loop each step compares its counter
    # with the column's full-step count before the masking branch, a word ptxas spills and
    # reloads every step (sm_90 SASS, d=128 causal)
    SPLIT: gl.constexpr = (ROWS_LATE & 2) != 0
    # ROWS_LATE bit 4 (launch._HOPPER_BWD_UNCLAMPED, an experiment): no clamp of the exponent
    UNCLAMPED: gl.constexpr = (ROWS_LATE & 4) != 0
    # ROWS_LATE bit 8 (launch.HOPPER_BWD_ALIBI_FOLD): the lse2 this kernel reads holds the causal
    # ALiBi's row term already (bwd.py FOLD_ROWS)
    FOLDED: gl.constexpr = (ROWS_LATE & 8) != 0
    # ROWS_LATE bit 16 (launch.HOPPER_BWD_CAP_EARLY): the softcap's factor 1 - tanh^2 taken into
    # P^T before dV's product is issued (its operand converted first), not after (without
    # dropout, whose branch converts dV's operand itself)
    CAP_EARLY: gl.constexpr = (ROWS_LATE & 16) != 0
    # dropout's draws (the 16-bit quad mapping) made once a step's first products are issued,
    # before the wait for S^T, and held as Philox's words until P^T is (FORM bit 2,
    # launch.HOPPER_DROPOUT_FORM); else drawn after the wait, on the way to dV's product
    EARLY: gl.constexpr = ((HAS_DROPOUT // 400000) % 2 == 1) and ((HAS_DROPOUT // 100) % 10 == 2) \
        and ((HAS_DROPOUT // 1000) % 100 == 16)
    # FORM bit 4 (launch.HOPPER_DROPOUT_FORM): dropout's dS^T as P^T where(P^T > 0, dP^T scale -
    # delta, delta), a score's FMA, compare, select and multiply where the default |P^T|
    # (where(P^T > 0, dP^T scale, 0) - delta) takes a multiply, a compare, a select, an add and
    # a multiply (dP^T scale - delta rounded once: dK and dQ differ from the default in the
    # last bits)
    DS_SELECT: gl.constexpr = HAS_DROPOUT != 0 and (HAS_DROPOUT // 1600000) % 2 == 1
    # FORM bit 5: dV's operand max(P^T, 0) converted by one cvt.rn.relu a pair of scores
    # (:func:`_relu_to`), not a max a score and then the conversion
    RELU_CVT: gl.constexpr = HAS_DROPOUT != 0 and (HAS_DROPOUT // 3200000) % 2 == 1
    dtype: gl.constexpr = q_smem.dtype
    # transposed scores [KEYS, MMA_M] (keys along rows, queries along columns)
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, MMA_M, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    key_layout: gl.constexpr = gl.SliceLayout(1, s_layout)
    query_layout: gl.constexpr = gl.SliceLayout(0, s_layout)
    # dropout's draws come in the forward's orientation (queries along rows), then transpose
    qk_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, KEYS, 16])

    off_b, off_kvh, q_start, q_lo, q_hi, k_start, k_lo, k_hi, col_off, nk, start_n, tile_ok = _key_tile(
        schedule, num_n_tiles, num_kv_heads, seqs, q_len, k_len, q_pos, k_pos, nq, nk, BLOCK_N,
        PER_SEQ, PACKED, SCHEDULED)
    q_row0 = q_start - q_lo
    k_row0 = k_start - k_lo
    i0 = q_lo // BLOCK
    first = start_n + WG * KEYS
    keys_pos = first + gl.arange(0, KEYS, key_layout)                       # [KEYS]
    key_ok = (keys_pos >= k_lo) & (keys_pos < k_hi)
    if HAS_KPM:
        keep = gl.load(KPM + off_b.to(gl.int64) * stride_kpm_b + (keys_pos + k_row0), mask=key_ok, other=0)
        key_ok = key_ok & (keep != 0)
    # the fused dQ (FUSED_DQ): dQ[:, DQ_COL0 : DQ_COL0 + d/2] += dS K over all the tile's keys,
    # one product, staged in DQ_PARTS tiles of DQ_COLS columns (fp32 rows of 128 bytes); with
    # DQ_ROWS (128-query steps) the warpgroup's half is the step's rows WG * 64 on, every column
    DQ_COLS: gl.constexpr = _DQ_COLS
    DQ_R: gl.constexpr = BLOCK_M // 2 if DQ_ROWS else BLOCK_M
    DQ_W: gl.constexpr = HEAD_DIM if DQ_ROWS else HEAD_DIM // 2
    DQ_PARTS: gl.constexpr = DQ_W // DQ_COLS
    DQ_COL0: gl.constexpr = WG * (HEAD_DIM // 2)
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, DQ_W, 16])
    part_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                          instr_shape=[16, DQ_COLS, 16])
    k_tile = k_smem.slice(WG * KEYS, KEYS)
    v_tile = v_smem.index(WG)
    dk = gl.zeros([KEYS, HEAD_DIM], gl.float32, o_layout)
    dv = gl.zeros([KEYS, HEAD_DIM], gl.float32, o_layout)
    mbarrier.wait(kv_bar, 0)
    if KV_REGS:
        # K and V as S^T's and dP^T's A operands from registers, loaded once (launch.
        # HOPPER_BWD_KV_REGS): an M=64, N=64 product with both operands in shared memory reads
        # them as fast as the copy serves them (4 KB an instruction of 32 clocks); with A in
        # registers it reads half. KV_REGS 1 passes them through each step's last wait, as
        # Gluon asks of a register operand (warpgroup_mma_wait's deps): without it ptxas gave
        # their registers to P^T in the unfused kernel's loop, so the next step multiplied P^T
        # (run26). KV_REGS 2 leaves the wait out: the fused kernel's loop then runs 37 fewer
        # instructions and no spill, and its sm_90 SASS keeps them (tests/test_hopper.py checks
        # every form the launch takes: RS_CLOBBERED)
        kv_op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
        k_op = k_tile.load(kv_op_layout)
        v_op = v_tile.load(kv_op_layout)
    else:
        k_op = k_tile
        v_op = v_tile
    step = 0
    for g in range(GROUP_SIZE):
        off_h = off_kvh * GROUP_SIZE + g
        lo, hi, n_full = _column(bwd_ptr, bwd_nfull, col_off, off_h, table_heads_gt1, nk, start_n,
                                 k_lo, tile_ok, BLOCK)
        bh = off_b * num_heads + off_h
        lse2_head = LSE2 + bh.to(gl.int64) * lse_len + q_row0
        delta_head = Delta + bh.to(gl.int64) * lse_len + q_row0
        alibi2 = _alibi2(ALIBI, off_b, off_h, stride_alibi_b, HAS_ALIBI, _NATURAL)
        full_trips = n_full * SUB
        trips = (hi - lo) * SUB
        for phase in gl.static_range(2 if SPLIT else 1):
            if SPLIT:
                # phase 0: the full steps, phase 1: the masked ones
                t_first = full_trips * phase
                t_end = trips if phase == 1 else full_trips
            else:
                t_first = 0
                t_end = trips
            for t in range(t_first, t_end):
                s = step % NUM_STAGES
                # a step of BLOCK_M queries in PARTS parts of MMA_M: one meeting of the warpgroups
                # (the fused dQ) and one slot of the ring per step, S^T, dP^T, dV and dK per part
                for h in gl.static_range(PARTS):
                    if not LATE:
                        start_m, rows_pos, row_ok = _bwd_step_rows(bwd_idx, lo, t, i0, q_lo, q_hi, h,
                                                                   query_layout, BLOCK, BLOCK_M, MMA_M)
                    if not STATS_TMA:
                        lse2 = gl.load(lse2_head + rows_pos, mask=row_ok, other=0.0)
                    if h == 0:
                        mbarrier.wait(ready.index(s), (step // NUM_STAGES) & 1)
                    if STATS_TMA:
                        # the step's statistics, copied by the producer beside Q and dO: read from
                        # shared memory where used, they hold no registers across the products' waits
                        lse2 = _part(lse2_smem.index(s), h, MMA_M, PARTS).load(query_layout)
                    q_tile = _part(q_smem.index(s), h, MMA_M, PARTS)
                    do_tile = _part(do_smem.index(s), h, MMA_M, PARTS)
                    # use_acc=False ignores the zeros: made here, they need no register across the loop
                    s_zero = gl.zeros([KEYS, MMA_M], gl.float32, s_layout)
                    sT = warpgroup_mma(k_op, q_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
                    dpT = warpgroup_mma(v_op, do_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
                    if LATE:
                        # the step's query positions (its table entry) read once its products are
                        # issued (launch.HOPPER_BWD_ROWS_LATE): read first, the entry's address (a
                        # spilled register) held the products back (run24, Nsight Compute: 4% of the
                        # stall samples at the top of the step), and the kernel spilled more
                        start_m, rows_pos, row_ok = _bwd_step_rows(bwd_idx, lo, t, i0, q_lo, q_hi, h,
                                                                   query_layout, BLOCK, BLOCK_M, MMA_M)
                    if EARLY:
                        w0, w1, w2, w3 = _early_calls_t(t + full_trips, seed, rng_offset, bh,
                                                        start_m + q_row0, first, MMA_M, HAS_DROPOUT)
                    sT = warpgroup_mma_wait(1, deps=(sT, ))
                    # the scores as bwd.py's _dkdv_inner recomputes them (softcap, ALiBi; plain:
                    # sT * qk_scale, dcapT = 1.0)
                    if HAS_ALIBI == 2 and not FOLDED:
                        # the scores leave out the causal bias's row term (R = start_m): so does the
                        # LSE (in float: the integer form is a loop-invariant arange the compiler
                        # hoists, a [MMA_M] vector held across the loop; positions are exact in
                        # float32 to 2**24). FOLDED: R is a multiple of 64, and the dQ kernel's
                        # statistics pass stored lse2 with the term in (bwd.py FOLD_ROWS); added
                        # here it takes 16 conversions, adds and FMAs a step and holds rows_pos
                        # through the full steps (sm_90 SASS, a full d=128 causal step 543 / 550
                        # instructions against 465 / 445 folded)
                        lse2 = lse2 + alibi2 * (rows_pos.to(gl.float32) - start_m.to(gl.float32))
                    s2T, dcapT = _log2_scores(sT, qk_scale, softcap2, alibi2, start_m, rows_pos[None, :],
                                              keys_pos[:, None], HAS_SOFTCAP, HAS_ALIBI, _UPCAST, _PRECISION)
                    # a probability is <= 1: the clamp keeps a peaked softmax finite (as bwd.py)
                    if UNCLAMPED:
                        pT = gl.exp2(s2T - lse2[None, :])
                    else:
                        pT = gl.exp2(gl.minimum(s2T - lse2[None, :], 0.0))             # [KEYS, MMA_M]
                    if SPLIT:
                        if phase == 1:
                            pT = _visible_t(pT, keys_pos, key_ok, rows_pos, row_ok, window_left,
                                            window_right, CAUSAL, HAS_WL, HAS_WR)
                    elif t >= full_trips:
                        pT = _visible_t(pT, keys_pos, key_ok, rows_pos, row_ok, window_left,
                                        window_right, CAUSAL, HAS_WL, HAS_WR)
                    if HAS_DROPOUT:
                        # the forward's mask, drawn again in this orientation (quad: in registers;
                        # mma: drawn as the forward does and transposed through shared memory, no
                        # thread holding a call's keys here). A dropped probability
                        # keeps its value with a minus sign (P >= 0): the mask needs no registers of
                        # its own until dP^T arrives. Its scale goes to dV at the end and to dP^T
                        # below.
                        if EARLY:
                            keepT = _quad_words_t_of(w0, w1, w2, w3, s_layout, KEYS, MMA_M) >= \
                                _dropout_cut(drop_threshold, HAS_DROPOUT)
                        elif (HAS_DROPOUT // 100) % 10 == 2:
                            keepT = _quad_words_t(seed, rng_offset, bh, start_m + q_row0, first, s_layout,
                                                  KEYS, MMA_M, HAS_DROPOUT) >= _dropout_cut(drop_threshold,
                                                                                          HAS_DROPOUT)
                        else:
                            keepT = gl.convert_layout(gl.permute(_dropout_keep(
                                seed, rng_offset, bh, start_m + q_row0, first, drop_threshold, qk_layout,
                                MMA_M, KEYS, HAS_DROPOUT), (1, 0)), s_layout)
                        pT = gl.where(keepT, pT, -pT)
                        if RELU_CVT:
                            pv = _relu_to(pT, dtype)
                        else:
                            pv = gl.maximum(pT, 0.0).to(dtype)
                        dv = warpgroup_mma(gl.convert_layout(pv, a_layout), do_tile, dv, is_async=True)
                    else:
                        pv = pT.to(dtype)
                        if HAS_SOFTCAP and CAP_EARLY:
                            pT = pT * dcapT
                        dv = warpgroup_mma(gl.convert_layout(pv, a_layout), do_tile, dv, is_async=True)
                    if HAS_SOFTCAP and (HAS_DROPOUT or not CAP_EARLY):
                        # dS^T = P^T (1 - tanh^2) (dP^T - delta): the softcap factor taken in here
                        # frees its registers before dP^T is waited on (bwd.py multiplies it last;
                        # the same product in another fp32 rounding order)
                        pT = pT * dcapT
                    # read late: [MMA_M] vectors cost 16 registers a thread each in this layout
                    if STATS_TMA:
                        delta = _part(delta_smem.index(s), h, MMA_M, PARTS).load(query_layout)
                    else:
                        delta = gl.load(delta_head + rows_pos, mask=row_ok, other=0.0)
                    dpT = warpgroup_mma_wait(1, deps=(dpT, ))
                    if DS_SELECT and RELU_CVT:
                        # as below, in PTX: LLVM packed the compares into bit masks beside the
                        # relu conversion (sm_90 SASS: 38 instructions a step more, not 32 fewer)
                        dsT = _ds_select(pT, dpT, drop_scale, delta[None, :])
                    elif DS_SELECT:
                        # kept (P^T >= 0): P (dP * scale - delta); dropped (P^T = -P <= 0): -P delta.
                        # One FMA, a compare, a select and a multiply a score
                        dsT = pT * gl.where(pT > 0.0, dpT * drop_scale - delta[None, :], delta[None, :])
                    elif HAS_DROPOUT:
                        # kept: P (dP * scale - delta); dropped: P (0 - delta)
                        dsT = gl.abs(pT) * (gl.where(pT > 0.0, dpT * drop_scale, 0.0) - delta[None, :])
                    else:
                        dsT = pT * (dpT - delta[None, :])
                    dsT = dsT.to(dtype)
                    dk = warpgroup_mma(gl.convert_layout(dsT, a_layout), q_tile, dk, is_async=True)
                    if FUSED_DQ:
                        # both warpgroups' dS^T of the step ([128 keys, BLOCK_M queries], two buffers
                        # by step parity); each warpgroup takes half of dQ's columns over all 128
                        # keys, so an element of dQ is added once per key tile. Waiting for the
                        # other warpgroup's half every step also frees the buffer two steps on: the
                        # other has finished its dQ products of this step before it stores the next
                        # step's half.
                        buf = step % 2
                        _part(ds_smem.index(buf).slice(WG * KEYS, KEYS), h, MMA_M, PARTS, 1).store(dsT)
                if FUSED_DQ:
                    fence_async_shared()
                    gl.thread_barrier()          # the warpgroup's four warps have stored their rows
                    mbarrier.arrive(ds_full.index(buf))
                    dv = warpgroup_mma_wait(1, deps=(dv, ))          # frees P^T's registers
                    mbarrier.wait(ds_full.index(buf), (step // 2) & 1)
                    dq_zero = gl.zeros([DQ_R, DQ_W], gl.float32, dq_layout)
                    if DQ_ROWS:
                        # [DQ_R, BLOCK_N]: this warpgroup's queries of dS against every key
                        ds_op = ds_smem.index(buf).slice(WG * DQ_R, DQ_R, 1).permute((1, 0))
                        dq = warpgroup_mma(ds_op, k_smem, dq_zero, use_acc=False, is_async=True)
                    else:
                        ds_op = ds_smem.index(buf).permute((1, 0))              # [BLOCK_M, BLOCK_N]
                        dq = warpgroup_mma(ds_op, k_smem.slice(DQ_COL0, HEAD_DIM // 2, 1), dq_zero,
                                           use_acc=False, is_async=True)
                    # (dQ before dK, FlashAttention-3/4's order, so that dQ's staging overlaps dK's
                    # product, was slower: forward+backward 0.93-0.97x at d=64, 0.92-1.01x at d=128
                    # on an H200, run20)
                    if KV_REGS == 1:
                        dk, dq, k_op, v_op = warpgroup_mma_wait(0, deps=(dk, dq, k_op, v_op))
                    else:
                        dk, dq = warpgroup_mma_wait(0, deps=(dk, dq))
                    _release(empty.index(s), RELEASE)
                    # the product (unscaled: sm_scale is applied where the accumulator is converted,
                    # launch.attention_backward) to this warpgroup's staging tiles (DQ_COLS columns
                    # each, split in registers: a relabeling), which the writer warp adds to the
                    # fp32 accumulator once its adds of the last step have read them
                    mbarrier.wait(dq_empty.index(WG), (step & 1) ^ 1)
                    if DQ_PARTS == 2:
                        dq0, dq1 = dq.reshape([DQ_R, 2, DQ_COLS]).permute((0, 2, 1)).split()
                        dq_smem.index(WG * DQ_PARTS).store(gl.convert_layout(dq0, part_layout,
                                                                             assert_trivial=True))
                        dq_smem.index(WG * DQ_PARTS + 1).store(gl.convert_layout(dq1, part_layout,
                                                                                 assert_trivial=True))
                    else:
                        dq_smem.index(WG * DQ_PARTS).store(dq)
                    fence_async_shared()
                    gl.thread_barrier()
                    mbarrier.arrive(dq_full.index(WG))
                else:
                    if KV_REGS == 1:
                        dv, dk, k_op, v_op = warpgroup_mma_wait(0, deps=(dv, dk, k_op, v_op))
                    else:
                        dv, dk = warpgroup_mma_wait(0, deps=(dv, dk))
                    _release(empty.index(s), RELEASE)
                step += 1

    dk = dk * sm_scale
    if HAS_DROPOUT:
        dv = dv * drop_scale
    if OUT_TMA == 2:
        # the tile's coordinates found again for the copy (launch.HOPPER_BWD_OUT_RELOAD), not
        # held across the step loops: ptxas allocates the loops' registers better (stop 69)
        off_b, off_kvh, q_start, q_lo, q_hi, k_start, k_lo, k_hi, col_off, nk, start_n, tile_ok = _key_tile(
            schedule, num_n_tiles, num_kv_heads, seqs, q_len, k_len, q_pos, k_pos, nq, nk, BLOCK_N,
            PER_SEQ, PACKED, SCHEDULED)
        k_row0 = k_start - k_lo
        first = start_n + WG * KEYS
    if OUT_TMA:
        # every key of the warpgroup's 64 is the tile's: dV, then dK, through this warpgroup's
        # V slot (its own, read by no other product: its last has completed) and a bulk copy
        # each, as the forward's output (launch.HOPPER_BWD_OUT_TMA); a partial block keeps
        # the masked register stores
        whole = (first >= k_lo) & (first + KEYS <= k_hi)
    else:
        whole = False
    # in the stored type before the branch (both branches store it)
    dk = dk.to(dtype)
    dv = dv.to(dtype)
    if whole:
        _bulk_store(v_tile, dv, dv_desc, off_b, off_kvh, first + k_row0, KEYS, HEAD_DIM)
        tma.store_wait(0)       # the slot is dK's next
        _bulk_store(v_tile, dk, dk_desc, off_b, off_kvh, first + k_row0, KEYS, HEAD_DIM)
        tma.store_wait(0)
    else:
        okeys = first + gl.arange(0, KEYS, gl.SliceLayout(1, o_layout))
        offs_d = gl.arange(0, HEAD_DIM, gl.SliceLayout(0, o_layout))
        base = off_b.to(gl.int64) * stride_dkb + off_kvh.to(gl.int64) * stride_dkh \
            + (okeys + k_row0).to(gl.int64)[:, None] * HEAD_DIM + offs_d[None, :]
        ok = ((okeys >= k_lo) & (okeys < k_hi))[:, None]
        gl.store(DK + base, dk, mask=ok)
        gl.store(DV + base, dv, mask=ok)


@gluon.jit
def _bwd_dq_writer(dq_desc, dq_smem, dq_full, dq_empty, bwd_ptr, bwd_idx, bwd_nfull, seqs,
                   schedule, num_n_tiles, num_kv_heads, q_len, k_len, q_pos, k_pos, nq, nk,
                   table_heads_gt1, BLOCK: gl.constexpr, BLOCK_M: gl.constexpr,
                   BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, GROUP_SIZE: gl.constexpr,
                   PER_SEQ: gl.constexpr, PACKED: gl.constexpr, SCHEDULED: gl.constexpr,
                   DQ_ROWS: gl.constexpr):
    """The fused dQ's writer warp: walks the producer's steps and, per step, adds each consumer
    warpgroup's staging tiles (its half of dQ's columns, scaled) to the fp32 accumulator at the
    step's rows with the copy engine's reduce-add, then hands the tiles back. The accumulator
    has ``BLOCK`` rows of padding before row 0: a step may start up to a block before its
    sequence (absolute positions), and the copy engine faults on negative coordinates."""
    SUB: gl.constexpr = BLOCK // BLOCK_M
    DQ_R: gl.constexpr = BLOCK_M // 2 if DQ_ROWS else BLOCK_M      # a warpgroup's tiles (see _bwd_consumer)
    DQ_PARTS: gl.constexpr = (HEAD_DIM if DQ_ROWS else HEAD_DIM // 2) // _DQ_COLS
    off_b, off_kvh, q_start, q_lo, q_hi, k_start, k_lo, k_hi, col_off, nk, start_n, tile_ok = _key_tile(
        schedule, num_n_tiles, num_kv_heads, seqs, q_len, k_len, q_pos, k_pos, nq, nk, BLOCK_N,
        PER_SEQ, PACKED, SCHEDULED)
    q_row0 = q_start - q_lo + BLOCK
    i0 = q_lo // BLOCK
    step = 0
    for g in range(GROUP_SIZE):
        off_h = off_kvh * GROUP_SIZE + g
        lo, hi, n_full = _column(bwd_ptr, bwd_nfull, col_off, off_h, table_heads_gt1, nk, start_n,
                                 k_lo, tile_ok, BLOCK)
        for t in range((hi - lo) * SUB):
            q_block_idx = gl.load(bwd_idx + lo + t // SUB)
            row = (q_block_idx + i0) * BLOCK + (t % SUB) * BLOCK_M + q_row0
            for w in gl.static_range(2):
                mbarrier.wait(dq_full.index(w), step & 1)
                for c in gl.static_range(DQ_PARTS):
                    if DQ_ROWS:
                        coord = [off_b, off_h, row + w * DQ_R, c * _DQ_COLS]
                    else:
                        coord = [off_b, off_h, row, w * (HEAD_DIM // 2) + c * _DQ_COLS]
                    _tma_reduce_add(dq_desc, coord,
                                    dq_smem.index(w * DQ_PARTS + c).reshape([1, 1, DQ_R, _DQ_COLS]))
            tma.store_wait(DQ_PARTS)          # warpgroup 0's adds have read its tiles
            mbarrier.arrive(dq_empty.index(0))
            tma.store_wait(0)
            mbarrier.arrive(dq_empty.index(1))
            step += 1


@gluon.jit(do_not_specialize=["q_len", "k_len", "q_pos", "k_pos", "nq", "nk", "seed", "rng_offset"])
def _hopper_dkdv_kernel(q_desc, k_desc, v_desc, do_desc, lse2_desc, delta_desc, dq_desc, LSE2, Delta,
                        DK, DV, bwd_ptr, bwd_idx, bwd_nfull, seqs, KPM, ALIBI, schedule, seed, rng_offset,
                        dk_desc, dv_desc, num_n_tiles, stride_dkb, stride_dkh, stride_kpm_b, num_heads, num_kv_heads,
                        lse_len, q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1,
                        window_left, window_right, sm_scale, qk_scale, softcap2, stride_alibi_b,
                        drop_threshold, drop_scale,
                        BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                        HEAD_DIM: gl.constexpr, GROUP_SIZE: gl.constexpr, NUM_STAGES: gl.constexpr,
                        CAUSAL: gl.constexpr, HAS_WL: gl.constexpr, HAS_WR: gl.constexpr,
                        HAS_KPM: gl.constexpr, PER_SEQ: gl.constexpr, PACKED: gl.constexpr,
                        HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, HAS_DROPOUT: gl.constexpr,
                        SCHEDULED: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                        PRODUCER_REGS: gl.constexpr, STATS_TMA: gl.constexpr,
                        FUSED_DQ: gl.constexpr, ROWS_LATE: gl.constexpr, DQ_ROWS: gl.constexpr,
                        KV_REGS: gl.constexpr, OUT_TMA: gl.constexpr = False,
                        RELEASE: gl.constexpr = False):
    """dK and dV of one 128-key tile: a producer warp streams (Q, dO) tiles of BLOCK_M queries
    (64; 128 at d=64 with the fused dQ, launch.HOPPER_BWD_STEP_M) of the key block's column
    (transposed tables) through a ring; two consumer warpgroups own 64 keys each and run, per
    64 queries of a step, S^T = K Q^T and dP^T = V dO^T, P^T from the forward's LSE, dV += P^T
    dO and dK += dS^T Q with P^T and dS^T from registers (with KV_REGS 1 or 2, K and V too:
    launch.HOPPER_BWD_KV_REGS, _bwd_consumer). delta and lse2 (and,
    without FUSED_DQ, dQ) come from the portable dQ kernel, which runs first (bwd.py). Each
    step's 64 rows of lse2 and delta reach the consumers by STATS_TMA (launch._stats_mode): 1,
    the producer's 1-D
    copies beside its Q and dO (the copy engine faults on a start that is not 16-byte aligned:
    launch._stats_tma says when they are); 2, the producer's 4-byte asynchronous copies (any
    alignment, rows outside the sequence zero-filled); 0, the consumers' own global loads.
    Softcap and ALiBi as bwd.py's
    ``_dkdv_inner``: the scores through ``_log2_scores``, the causal ALiBi's row term added back
    to the LSE (or, with ROWS_LATE bit 8, in the lse2 the dQ kernel stored: bwd.py FOLD_ROWS),
    dS^T times ``1 - tanh^2``.

    With FUSED_DQ (launch.py ``HOPPER_FUSED_DQ``) the kernel also computes dQ, as
    FlashAttention-3 does: per step both warpgroups' dS^T go through shared memory, each
    warpgroup multiplies the step's dS by K for half of dQ's columns (with DQ_ROWS, for half of
    the step's rows and every column), and a writer warp adds the
    products (fp32, scaled) to ``dq_desc``'s accumulator with the copy engine's reduce-add. No
    dQ kernel then recomputes S and dP: 5 products a step instead of 4 + 3. delta and lse2
    come from the dQ kernel's prologue run alone (bwd.py ``STATS_ONLY``)."""
    gl.static_assert(BLOCK % BLOCK_M == 0)
    gl.static_assert(BLOCK % BLOCK_N == 0)
    gl.static_assert(gl.num_warps() == 4)
    HALF: gl.constexpr = BLOCK_N // 2
    dtype: gl.constexpr = q_desc.dtype
    q_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, HEAD_DIM], dtype)
    kv_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([HALF, HEAD_DIM], dtype)
    q_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, HEAD_DIM], q_layout)
    do_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, HEAD_DIM], q_layout)
    k_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, HEAD_DIM], kv_layout)
    v_smem = gl.allocate_shared_memory(dtype, [2, HALF, HEAD_DIM], kv_layout)
    # the fused dQ's buffers (a token size without it): dS^T of both warpgroups by step parity,
    # and each warpgroup's fp32 staging tiles
    ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([HALF, BLOCK_M], dtype)
    DQ_R: gl.constexpr = BLOCK_M // 2 if DQ_ROWS else BLOCK_M      # the staging tiles' rows
    dq_stage_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([DQ_R, _DQ_COLS], gl.float32)
    if FUSED_DQ:
        ds_smem = gl.allocate_shared_memory(dtype, [2, BLOCK_N, BLOCK_M], ds_layout)
        dq_smem = gl.allocate_shared_memory(gl.float32, [HEAD_DIM // _DQ_COLS * BLOCK_M // DQ_R, DQ_R, _DQ_COLS],
                                            dq_stage_layout)
    else:
        ds_smem = gl.allocate_shared_memory(dtype, [1, 8, BLOCK_M], ds_layout)
        dq_smem = gl.allocate_shared_memory(gl.float32, [1, 8, _DQ_COLS], dq_stage_layout)
    ds_full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    dq_full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    dq_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(ds_full.index(i), count=2)        # both warpgroups' halves of dS^T stored
        mbarrier.init(dq_full.index(i), count=1)        # warpgroup i's staging tiles written
        mbarrier.init(dq_empty.index(i), count=1)       # ... and read by the writer's adds
    if STATS_TMA == 2:
        stat_layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
    else:
        stat_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32,
                                                         rank=1)
    lse2_smem = gl.allocate_shared_memory(gl.float32, [NUM_STAGES, BLOCK_M], stat_layout)
    delta_smem = gl.allocate_shared_memory(gl.float32, [NUM_STAGES, BLOCK_M], stat_layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    # both consumer warpgroups release a slot (RELEASE: each of their threads)
    RELEASES: gl.constexpr = 2 * (128 if RELEASE else 1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=RELEASES)

    # The two calls differ only by the writer partition: Gluon 3.6 takes the partitions' argument
    # tuples as literals (one built in a variable loses its constexprs, "cannot convert").
    if FUSED_DQ:
        gl.warp_specialize(
            [(_bwd_consumer, (q_smem, do_smem, k_smem, v_smem, lse2_smem, delta_smem, ds_smem, dq_smem,
                              kv_bar, ready, empty, ds_full, dq_full, dq_empty, LSE2, Delta, DK, DV, dk_desc, dv_desc,
                              bwd_ptr, bwd_idx, bwd_nfull, seqs, KPM, ALIBI,
                              schedule, seed, rng_offset, num_n_tiles, stride_dkb, stride_dkh,
                              stride_kpm_b, num_heads, num_kv_heads, lse_len, q_len, k_len, q_pos, k_pos,
                              nq, nk, table_heads_gt1, window_left, window_right, sm_scale, qk_scale,
                              softcap2, stride_alibi_b, drop_threshold, drop_scale,
                              BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, GROUP_SIZE, NUM_STAGES,
                              CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ, PACKED, HAS_SOFTCAP, HAS_ALIBI,
                              HAS_DROPOUT, SCHEDULED, STATS_TMA, FUSED_DQ, ROWS_LATE, DQ_ROWS, KV_REGS, 0, OUT_TMA, RELEASE)),
             (_bwd_consumer, (q_smem, do_smem, k_smem, v_smem, lse2_smem, delta_smem, ds_smem, dq_smem,
                              kv_bar, ready, empty, ds_full, dq_full, dq_empty, LSE2, Delta, DK, DV, dk_desc, dv_desc,
                              bwd_ptr, bwd_idx, bwd_nfull, seqs, KPM, ALIBI,
                              schedule, seed, rng_offset, num_n_tiles, stride_dkb, stride_dkh,
                              stride_kpm_b, num_heads, num_kv_heads, lse_len, q_len, k_len, q_pos, k_pos,
                              nq, nk, table_heads_gt1, window_left, window_right, sm_scale, qk_scale,
                              softcap2, stride_alibi_b, drop_threshold, drop_scale,
                              BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, GROUP_SIZE, NUM_STAGES,
                              CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ, PACKED, HAS_SOFTCAP, HAS_ALIBI,
                              HAS_DROPOUT, SCHEDULED, STATS_TMA, FUSED_DQ, ROWS_LATE, DQ_ROWS, KV_REGS, 1, OUT_TMA, RELEASE)),
             (_bwd_producer, (q_desc, k_desc, v_desc, do_desc, lse2_desc, delta_desc, LSE2, Delta,
                              q_smem,
                              do_smem, k_smem, v_smem, lse2_smem, delta_smem, kv_bar, ready, empty, bwd_ptr,
                              bwd_idx, bwd_nfull, seqs, schedule, num_n_tiles, num_heads, num_kv_heads,
                              lse_len, q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1,
                              BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, GROUP_SIZE, NUM_STAGES,
                              PER_SEQ, PACKED, SCHEDULED, STATS_TMA)),
             (_bwd_dq_writer, (dq_desc, dq_smem, dq_full, dq_empty, bwd_ptr, bwd_idx, bwd_nfull, seqs,
                               schedule, num_n_tiles, num_kv_heads, q_len, k_len, q_pos, k_pos, nq,
                               nk, table_heads_gt1, BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, GROUP_SIZE,
                               PER_SEQ, PACKED, SCHEDULED, DQ_ROWS))],
            [4, 1, 1], [CONSUMER_REGS, PRODUCER_REGS, PRODUCER_REGS])
    else:
        gl.warp_specialize(
            [(_bwd_consumer, (q_smem, do_smem, k_smem, v_smem, lse2_smem, delta_smem, ds_smem, dq_smem,
                              kv_bar, ready, empty, ds_full, dq_full, dq_empty, LSE2, Delta, DK, DV, dk_desc, dv_desc,
                              bwd_ptr, bwd_idx, bwd_nfull, seqs, KPM, ALIBI,
                              schedule, seed, rng_offset, num_n_tiles, stride_dkb, stride_dkh,
                              stride_kpm_b, num_heads, num_kv_heads, lse_len, q_len, k_len, q_pos, k_pos,
                              nq, nk, table_heads_gt1, window_left, window_right, sm_scale, qk_scale,
                              softcap2, stride_alibi_b, drop_threshold, drop_scale,
                              BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, GROUP_SIZE, NUM_STAGES,
                              CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ, PACKED, HAS_SOFTCAP, HAS_ALIBI,
                              HAS_DROPOUT, SCHEDULED, STATS_TMA, FUSED_DQ, ROWS_LATE, DQ_ROWS, KV_REGS, 0, OUT_TMA, RELEASE)),
             (_bwd_consumer, (q_smem, do_smem, k_smem, v_smem, lse2_smem, delta_smem, ds_smem, dq_smem,
                              kv_bar, ready, empty, ds_full, dq_full, dq_empty, LSE2, Delta, DK, DV, dk_desc, dv_desc,
                              bwd_ptr, bwd_idx, bwd_nfull, seqs, KPM, ALIBI,
                              schedule, seed, rng_offset, num_n_tiles, stride_dkb, stride_dkh,
                              stride_kpm_b, num_heads, num_kv_heads, lse_len, q_len, k_len, q_pos, k_pos,
                              nq, nk, table_heads_gt1, window_left, window_right, sm_scale, qk_scale,
                              softcap2, stride_alibi_b, drop_threshold, drop_scale,
                              BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, GROUP_SIZE, NUM_STAGES,
                              CAUSAL, HAS_WL, HAS_WR, HAS_KPM, PER_SEQ, PACKED, HAS_SOFTCAP, HAS_ALIBI,
                              HAS_DROPOUT, SCHEDULED, STATS_TMA, FUSED_DQ, ROWS_LATE, DQ_ROWS, KV_REGS, 1, OUT_TMA, RELEASE)),
             (_bwd_producer, (q_desc, k_desc, v_desc, do_desc, lse2_desc, delta_desc, LSE2, Delta,
                              q_smem,
                              do_smem, k_smem, v_smem, lse2_smem, delta_smem, kv_bar, ready, empty, bwd_ptr,
                              bwd_idx, bwd_nfull, seqs, schedule, num_n_tiles, num_heads, num_kv_heads,
                              lse_len, q_len, k_len, q_pos, k_pos, nq, nk, table_heads_gt1,
                              BLOCK, BLOCK_M, BLOCK_N, HEAD_DIM, GROUP_SIZE, NUM_STAGES,
                              PER_SEQ, PACKED, SCHEDULED, STATS_TMA))],
            [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
