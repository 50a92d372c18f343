"""Philox-4x32 (7 rounds by default, any 1..10) in PyTorch integer ops, bit for bit the
generator of ``tl.philox``.

Dropout masks are a pure function of ``(seed, key position, query row, batch*head, offset)``
(and, in the "quad" mapping, the query's position mod 16):
the Triton kernels draw them with ``tl.philox`` and the torch backend with :func:`philox4x32`
below, so both backends drop exactly the same attention probabilities for one seed, and
each backward regenerates its forward's mask (no N x N mask is ever stored).
"""
from __future__ import annotations

from typing import Tuple

import torch

__all__ = ["philox4x32", "dropout_keep", "dropout_draws", "dropout_threshold", "dropout_scale", "draw_seed",
           "dropout_variant"]

_MASK32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57


def _mulhilo(m: int, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product of the constant ``m`` and uint32 ``x``
    (held in int64), with every intermediate below 2**50 so int64 never overflows."""
    m_lo, m_hi = m & 0xFFFF, m >> 16
    a = x * m_lo                                   # < 2**48
    b = x * m_hi                                   # < 2**48
    low = a + ((b & 0xFFFF) << 16)                 # < 2**49
    lo = low & _MASK32
    hi = ((b >> 16) + (low >> 32)) & _MASK32
    return hi, lo


def philox4x32(seed: int, c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor,
               c3: torch.Tensor, rounds: int = 10):
    """Four uint32 outputs (int64 tensors) for counters ``c0..c3`` (broadcastable int64 tensors
    holding uint32 values) under the 64-bit ``seed``, as ``triton.language.philox`` computes."""
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    c0, c1, c2, c3 = torch.broadcast_tensors(c0 & _MASK32, c1 & _MASK32, c2 & _MASK32, c3 & _MASK32)
    for _ in range(rounds):
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


# ------------------------------------------------------------------ draw variants
# Which bits of which Philox call decide an element. All variants are a pure function of
# (seed, offset, batch*head, query row, key position); the kernels and the torch backend read
# the same three settings, so they drop the same entries. Read at every call: change them
# between calls, never between a forward and its backward.
#
# DROPOUT_BITS   16: a draw is 16 bits, 8 per Philox call, p rounded to a multiple of 2**-16.
#                 8: a draw is 8 bits, 16 per call (FlashAttention-2's granularity), p rounded
#                    to a multiple of 1/256 (p=0.1 -> drop 26/256, keep 230/256 = 0.8984).
# DROPOUT_MAPPING "mma": the draws of one call serve the keys one GPU thread holds in the MMA
#                    accumulator layout (key u = c*CH + n*8 + t*2 + h, CH = 8 * draws/2:
#                    call (c*4 + t, row, bh, offset), draw 2n + h), so the kernels rebuild the
#                    [rows, keys] mask with no layout conversion (no shared-memory round trip).
#                 "interleave" (16 bits only): the original mapping, counter (u // 8, ...),
#                    key u takes half u % 2 of output (u % 8) // 2; its tl.join interleave
#                    compiles to layout conversions through shared memory.
#                 "quad", 16 bits: a call serves the queries {p, p+1, p+8, p+9} (query
#                    positions, p % 16 in {0, 2, 4, 6}) against the keys {k, k+8} (k % 16 < 8):
#                    counter ((k // 16) * 8 + k % 8, R, bh, offset) with R the tensor row of
#                    position p; query p + y + 8z against key k + 8x takes half z of output
#                    2y + x. Both orientations of the MMA accumulator (queries along rows in the
#                    forward, keys along rows in the dK/dV kernel) hold whole calls or halves
#                    of a call in two lanes, so neither kernel moves the mask through shared
#                    memory (the "mma" mapping's draws are native to the forward only).
#                 "quad", 8 bits: a call serves the queries {p, p+1, p+8, p+9} against the
#                    keys {k, k+1, k+8, k+9} (p % 16 and k % 16 in {0, 2, 4, 6}): counter
#                    ((k // 16) * 4 + (k % 16) // 2, R, bh, offset); query p + y + 8z against
#                    key k + x + 8v takes byte v + 2z of output 2y + x. In either orientation
#                    a call's 16 draws sit in two lanes 4 apart, 8 each (two whole words), so
#                    both kernels trade half the words of a call between lane pairs.
#                 "auto" (the default): "quad".
# DROPOUT_ROUNDS  Philox rounds: 7 (the default: the fewest that pass BigCrush per Salmon et al.
#                    2011, and FlashAttention-2's count, csrc/flash_attn/src/philox.cuh), 10
#                    (Philox-4x32-10, the usual standard; 43% more integer work), or any 1..10.
# Defaults since run21 (docs/hopper.md, "Dropout's quad mapping"): 16 bits, "quad", 7 rounds;
# before, 16 bits, "mma", 10 rounds (set SPARSEFLASH_DROPOUT_MAPPING=mma and
# SPARSEFLASH_DROPOUT_ROUNDS=10 to draw the earlier releases' masks).
import os as _os

DROPOUT_BITS = int(_os.environ.get("SPARSEFLASH_DROPOUT_BITS", "16"))
DROPOUT_MAPPING = _os.environ.get("SPARSEFLASH_DROPOUT_MAPPING", "auto")
DROPOUT_ROUNDS = int(_os.environ.get("SPARSEFLASH_DROPOUT_ROUNDS", "7"))


MAPPINGS = ("interleave", "mma", "quad")      # DROPOUT_MAPPING's values, by code 0, 1, 2


def dropout_variant() -> Tuple[int, int, int]:
    """(bits, mapping code, rounds) now in force, validated; the code indexes
    :data:`MAPPINGS` (0 "interleave", 1 "mma", 2 "quad")."""
    bits, mapping, rounds = int(DROPOUT_BITS), str(DROPOUT_MAPPING), int(DROPOUT_ROUNDS)
    if bits not in (8, 16):
        raise ValueError(f"DROPOUT_BITS must be 8 or 16, got {bits}")
    if mapping == "auto":
        mapping = "quad"
    if mapping not in MAPPINGS or (mapping == "interleave" and bits != 16):
        raise ValueError(f"DROPOUT_MAPPING must be 'auto', 'mma', 'quad', or 'interleave' with "
                         f"16-bit draws; got {mapping!r} with {bits}-bit draws")
    if not 1 <= rounds <= 10:
        raise ValueError(f"DROPOUT_ROUNDS must be in 1..10, got {rounds}")
    return bits, MAPPINGS.index(mapping), rounds


def dropout_threshold(p: float, bits: int = None) -> int:
    """Keep an element iff its draw (``bits`` wide, default the variant's) is >= this: drop
    probability ``threshold / 2**bits``, ``p`` rounded to the nearest multiple of 2**-bits
    (below 2**-(bits+1) nothing is dropped)."""
    bits = dropout_variant()[0] if bits is None else bits
    return min(int(round(p * float(1 << bits))), (1 << bits) - 1)


def dropout_scale(p: float, bits: int = None) -> float:
    """The kept elements' scale, 1 / (keep probability) of the draws exactly, so the dropout
    is unbiased for the threshold actually used (``1 / (1 - p)`` up to 2**-bits in ``p``).
    FlashAttention-2 instead keeps ``floor((1-p)*255) + 1`` of 256 byte values and scales by
    ``1 / (1 - p)``: at p=0.1 it keeps 230/256 too but scales by 1/0.9, a 0.17% low bias."""
    bits = dropout_variant()[0] if bits is None else bits
    full = float(1 << bits)
    return full / (full - dropout_threshold(p, bits))


def dropout_draws(seed: int, offset: int, bh: torch.Tensor, rows: torch.Tensor,
                  cols: torch.Tensor, positions: torch.Tensor = None) -> torch.Tensor:
    """The draws ``[..., len(rows), len(cols)]`` (int64, ``DROPOUT_BITS`` wide) of query tensor
    rows ``rows`` against key positions ``cols`` (positions in their sequence), for the
    (batch * num_heads + head) indices ``bh`` (shape ``[..., 1, 1]``), as the kernels draw them
    (kernels/tiles.py, ``_keep``) under the variant in force (see ``DROPOUT_MAPPING``).
    ``positions``: the rows' query positions (default ``rows``: a sequence that starts at tensor
    row 0 and position 0); only the "quad" mapping reads them, which groups queries by position
    mod 16."""
    bits, mapping, rounds = dropout_variant()
    cols, rows = cols.long(), rows.long()
    if mapping == 2:
        pos = rows if positions is None else positions.long()
        if pos.shape != rows.shape:
            raise ValueError(f"positions must have the shape of rows {tuple(rows.shape)}, got "
                             f"{tuple(pos.shape)}")
        y, z = pos % 2, (pos % 16) // 8
        row_counter = rows - y - 8 * z              # tensor row of the call's first query
        if bits == 16:
            counter = (cols // 16) * 8 + cols % 8
            # half z of word 2y + x (x = (col % 16) // 8): draw 2 (2y + x) + z of the call
            j = 2 * (2 * y[:, None] + (cols % 16 // 8)[None, :]) + z[:, None]
        else:
            counter = (cols // 16) * 4 + (cols % 8) // 2
            # byte v + 2z of word 2y + x (x = col % 2, v = (col % 16) // 8)
            j = 4 * (2 * y[:, None] + (cols % 2)[None, :]) + (cols % 16 // 8)[None, :] + 2 * z[:, None]
    else:
        row_counter = rows
        if mapping == 1:
            per_call = 128 // bits                  # draws per call: 8 (16-bit) or 16 (8-bit)
            chunk = 4 * per_call                    # keys served by the 4 calls of a chunk
            counter = (cols // chunk) * 4 + (cols % 8) // 2
            j = 2 * ((cols % chunk) // 8) + cols % 2    # draw index in the call
        else:
            counter = cols // 8
            j = cols % 8
    out = philox4x32(seed, counter[None, :], row_counter[:, None], bh.long(),
                     torch.tensor(offset, dtype=torch.long, device=rows.device), rounds=rounds)
    r = torch.stack(torch.broadcast_tensors(*out), dim=-1)                  # [..., R, C, 4]
    per_word = 32 // bits
    j = j.expand(r.shape[:-1])
    word = torch.gather(r, -1, (j // per_word)[..., None])[..., 0]
    return (word >> (bits * (j % per_word))) & ((1 << bits) - 1)


def dropout_keep(seed: int, offset: int, bh: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                 p: float, positions: torch.Tensor = None) -> torch.Tensor:
    """Bool keep mask ``[..., len(rows), len(cols)]`` for query tensor rows ``rows`` (at query
    positions ``positions``, default ``rows``) and key positions ``cols`` (see
    :func:`dropout_draws`)."""
    return dropout_draws(seed, offset, bh, rows, cols, positions) >= dropout_threshold(p)


def draw_seed(generator=None) -> torch.Tensor:
    """(seed, offset) int64 on the CPU, drawn from torch's default generator: ``torch.manual_seed``
    reproduces a call."""
    return torch.randint(0, 2 ** 62, (2,), generator=generator, dtype=torch.long)
