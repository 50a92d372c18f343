"""The float64 oracle beside the kernels, simple enough to trust by reading.

:func:`reference_attention` is dense masked attention in float64 over a token mask:
``layout.to_token_mask`` of every sequence placed at its rows and columns (O(N^2); for
tests and small checks only). The production CPU backend is :mod:`sparseflash.blockwise`.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

__all__ = ["reference_attention", "token_mask"]


def token_mask(layout, batch: int) -> torch.Tensor:
    """Bool ``[batch or 1, num_heads, seq_len, kv_len]``: the layout's token rule, with every
    sequence at its rows and columns (packed documents, per-batch tables) and False across
    sequences."""
    from .layout import K_LEN, K_START, Q_LEN, Q_START

    per_batch = layout.num_seqs > 1 and not layout.packed
    mask = torch.zeros((batch if per_batch else 1, layout.num_heads, layout.seq_len, layout.kv_len),
                       dtype=torch.bool)
    for s in range(layout.num_seqs):
        qs, ql, ks, kl = (int(layout.seqs[s, c]) for c in (Q_START, Q_LEN, K_START, K_LEN))
        b = s if per_batch else 0
        for h in range(layout.num_heads):
            mask[b, h, qs:qs + ql, ks:ks + kl] = torch.from_numpy(layout.to_token_mask(h, seq=s))
    return mask


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout=None,
                        scale: Optional[float] = None, *,
                        mask: Optional[torch.Tensor] = None, softcap: float = 0.0,
                        alibi_slopes: Optional[torch.Tensor] = None,
                        positions: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                        keep: Optional[torch.Tensor] = None,
                        dropout_p: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dense masked attention in float64: ``softmax(scale * q k^T | mask) v``.

    ``mask`` (bool, broadcastable to ``(B, Hq, N, Nk)``) defaults to the layout's
    :func:`token_mask`. ``softcap``: ``s -> softcap * tanh(s / softcap)``; ``alibi_slopes``
    (``(Hq,)`` or ``(B, Hq)``) with ``positions = (t, u)`` (absolute positions of the query and
    key rows): ``s -= slope * |t - u|``; ``keep`` (bool, broadcastable to the scores) with
    ``dropout_p``: the probabilities times ``keep * dropout_scale(dropout_p)`` (``1 / (1 - p)``
    for ``p`` on the draws' 2**-16 grid) multiply V (the LSE is the
    undropped one). Returns ``out (B, Hq, N, d)`` float64 and ``lse (B, Hq, N)`` float64.
    Rows whose mask is empty give out 0 and lse -inf. Differentiable (autograd) in q, k, v.
    """
    B, H, N, d = q.shape
    Hkv = k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q64, k64, v64 = (t.to(torch.float64) for t in (q, k, v))
    k64 = k64.repeat_interleave(H // Hkv, dim=1)
    v64 = v64.repeat_interleave(H // Hkv, dim=1)
    if mask is None:
        mask = token_mask(layout, B)
    mask = mask.to(q.device)
    s = (q64 @ k64.transpose(-1, -2)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        t, u = (x.to(q.device) for x in positions)
        slopes = alibi_slopes.to(q.device, torch.float64)
        slopes = slopes[None, :, None, None] if slopes.dim() == 1 else slopes[:, :, None, None]
        s = s - slopes * (t[:, None] - u[None, :]).abs().to(torch.float64)
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)                                 # -inf on empty rows
    lse_safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    p = torch.exp(s - lse_safe[..., None])                          # exp(-inf) = 0 on empty rows
    if keep is not None:
        from .philox import dropout_scale

        p = p * keep.to(p.device) * dropout_scale(dropout_p)
    return p @ v64, lse
