"""Philox-4x32-10 in PyTorch integer ops, bit for bit the generator of ``tl.philox``.

Dropout masks are a pure function of ``(seed, key position, query row, batch*head, offset)``:
the Triton kernels draw them with ``tl.philox`` and the torch backend with :func:`philox4x32`
below, so both backends drop exactly the same attention probabilities for one seed, and
each backward regenerates its forward's mask (no N x N mask is ever stored).
"""
from __future__ import annotations

from typing import Tuple

import torch

__all__ = ["philox4x32", "dropout_keep", "dropout_draws", "dropout_threshold", "dropout_scale", "draw_seed"]

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


DRAW_BITS = 16          # a dropout draw: 16 bits, eight per Philox call


def dropout_threshold(p: float) -> int:
    """Keep an element iff its 16-bit draw is >= this: drop probability ``threshold / 2**16``,
    ``p`` rounded to the nearest multiple of 2**-16."""
    return min(int(round(p * 65536.0)), 65535)


def dropout_scale(p: float) -> float:
    """The kept elements' scale, 1 / (keep probability) of the draws exactly, so the dropout
    is unbiased for the threshold actually used (``1 / (1 - p)`` up to 2**-16 in ``p``)."""
    return 65536.0 / (65536.0 - dropout_threshold(p))


def dropout_draws(seed: int, offset: int, bh: torch.Tensor, rows: torch.Tensor,
                  cols: torch.Tensor) -> torch.Tensor:
    """The 16-bit draws ``[..., len(rows), len(cols)]`` (int64) of query tensor rows ``rows``
    against key positions ``cols`` (positions in their sequence), for the (batch * num_heads +
    head) indices ``bh`` (shape ``[..., 1, 1]``). Key position u takes 16-bit half ``u % 2`` of
    output ``(u % 8) // 2`` of the Philox call with counter ``(u // 8, row, bh, offset)``: one
    call serves eight keys, as the kernels draw them (kernels/tiles.py, ``_keep``)."""
    cols = cols.long()
    out = philox4x32(seed, (cols // 8)[None, :], rows.long()[:, None], bh.long(),
                     torch.tensor(offset, dtype=torch.long, device=rows.device))
    r = torch.stack(torch.broadcast_tensors(*out), dim=-1)                  # [..., R, C, 4]
    j = (cols % 8).expand(r.shape[:-1])
    word = torch.gather(r, -1, (j // 2)[..., None])[..., 0]
    return (word >> (16 * (j % 2))) & 0xFFFF


def dropout_keep(seed: int, offset: int, bh: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                 p: float) -> torch.Tensor:
    """Bool keep mask ``[..., len(rows), len(cols)]`` for query tensor rows ``rows`` and key
    positions ``cols`` (see :func:`dropout_draws`)."""
    return dropout_draws(seed, offset, bh, rows, cols) >= dropout_threshold(p)


def draw_seed(generator=None) -> torch.Tensor:
    """(seed, offset) int64 on the CPU, drawn from torch's default generator: ``torch.manual_seed``
    reproduces a call."""
    return torch.randint(0, 2 ** 62, (2,), generator=generator, dtype=torch.long)
