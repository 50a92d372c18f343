"""References beside the kernel, simple enough to trust by reading.

* :func:`reference_attention`: float64, dense, masked with ``layout.to_token_mask``. O(N^2);
  for tests only.
* :func:`blockwise_forward` / :func:`blockwise_backward`: the ``backend="torch"``
  implementation. It walks the same CSR tables as the Triton kernels, one query block
  (forward, dQ) or key block (dK/dV) at a time, so memory is O(block rows), never N x N.
  It computes in fp32 for half inputs and in the input dtype otherwise.

Shapes everywhere: ``q (B, Hq, N, d)``, ``k, v (B, Hkv, Nk, d)``, ``lse (B, Hq, N)``;
query head ``h`` reads kv head ``h // (Hq // Hkv)``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch

__all__ = ["reference_attention", "blockwise_forward", "blockwise_backward"]


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout,
                        scale: Optional[float] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Dense masked attention in float64: ``softmax(scale * q k^T | mask) v``.

    Returns ``out (B, Hq, N, d)`` float64 and ``lse (B, Hq, N)`` float64. Rows whose mask
    is empty give out 0 and lse -inf. Differentiable (autograd) in q, k, v.
    """
    B, H, N, d = q.shape
    Hkv = k.shape[1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    q64, k64, v64 = (t.to(torch.float64) for t in (q, k, v))
    k64 = k64.repeat_interleave(H // Hkv, dim=1)
    v64 = v64.repeat_interleave(H // Hkv, dim=1)
    mask = torch.stack([torch.from_numpy(layout.to_token_mask(h)) for h in range(H)])
    mask = mask.to(q.device)[None]                                   # [1, H, N, Nk]
    s = (q64 @ k64.transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)                                 # -inf on empty rows
    lse_safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    p = torch.exp(s - lse_safe[..., None])                          # exp(-inf) = 0 on empty rows
    return p @ v64, lse


# ------------------------------------------------------------------ blockwise (backend="torch")
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _token_index(blocks: Sequence[int], block_size: int, length: int, device) -> torch.Tensor:
    """Token positions covered by ``blocks``, clipped to ``length``."""
    parts = [torch.arange(b * block_size, min((b + 1) * block_size, length), device=device)
             for b in blocks]
    return torch.cat(parts)


def _rows(ptr: List[int], idx: List[int], r: int) -> List[int]:
    return idx[ptr[r]:ptr[r + 1]]


def _head_groups(num_heads: int, per_head: bool) -> List[List[int]]:
    """Query heads served by each table head: all of them for a shared table."""
    return [[h] for h in range(num_heads)] if per_head else [list(range(num_heads))]


def _scores(qi, kj, scale, q_tok, k_tok, causal, seq_len, kv_len):
    s = (qi @ kj.transpose(-1, -2)) * scale                          # [B, h, Lq, Lk]
    if causal:
        visible = k_tok[None, :] <= q_tok[:, None] + (kv_len - seq_len)
        s = s.masked_fill(~visible, float("-inf"))
    return s


def blockwise_forward(q, k, v, fwd_ptr, fwd_idx, *, block_size: int, causal: bool,
                      per_head: bool, scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Forward over the CSR rows; returns ``out`` (q's dtype) and ``lse`` (fp32; float64 for
    float64 inputs, so that gradcheck's finite differences see it)."""
    B, H, N, d = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    group = H // Hkv
    ct = _compute_dtype(q.dtype)
    nq = -(-N // block_size)
    ptr, idx = fwd_ptr.tolist(), fwd_idx.tolist()
    out = torch.zeros((B, H, N, d), dtype=ct, device=q.device)
    lse = torch.full((B, H, N), float("-inf"), dtype=ct, device=q.device)
    for th, heads in enumerate(_head_groups(H, per_head)):
        hs = torch.tensor(heads, device=q.device)
        kh = k.to(ct).index_select(1, hs // group)                   # [B, h, Nk, d]
        vh = v.to(ct).index_select(1, hs // group)
        for i in range(nq):
            blocks = _rows(ptr, idx, th * nq + i)
            if not blocks:
                continue
            q_tok = torch.arange(i * block_size, min((i + 1) * block_size, N), device=q.device)
            k_tok = _token_index(blocks, block_size, Nk, q.device)
            qi = q.to(ct).index_select(1, hs)[:, :, q_tok]
            s = _scores(qi, kh[:, :, k_tok], scale, q_tok, k_tok, causal, N, Nk)
            m = s.amax(-1, keepdim=True)
            m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
            p = torch.exp(s - m)
            l = p.sum(-1, keepdim=True)
            l_safe = torch.where(l == 0, torch.ones_like(l), l)
            o_i = (p @ vh[:, :, k_tok]) / l_safe
            lse_i = torch.where(l == 0, torch.full_like(l, float("-inf")), m + torch.log(l_safe))
            out[:, heads, q_tok.min():q_tok.max() + 1] = o_i
            lse[:, heads, q_tok.min():q_tok.max() + 1] = lse_i[..., 0]
    return out.to(q.dtype), lse.to(torch.float64 if q.dtype == torch.float64 else torch.float32)


def _probs_and_dscores(qh, kh, vh, doh, lse_h, delta_h, q_tok, k_tok, scale, causal, N, Nk):
    """Recomputed probabilities p and score gradients ds of one block pair   # [B, h, Lq, Lk]."""
    s = _scores(qh[:, :, q_tok], kh[:, :, k_tok], scale, q_tok, k_tok, causal, N, Nk)
    p = torch.exp(s - lse_h[:, :, q_tok, None])
    dp = doh[:, :, q_tok] @ vh[:, :, k_tok].transpose(-1, -2)
    return p, p * (dp - delta_h[:, :, q_tok, None])


def blockwise_backward(do, q, k, v, out, lse, fwd_ptr, fwd_idx, bwd_ptr, bwd_idx, *,
                       block_size: int, causal: bool, per_head: bool, scale: float,
                       dlse: Optional[torch.Tensor] = None):
    """Backward over the CSR rows: dQ walks the forward table, dK/dV the transposed one."""
    B, H, N, d = q.shape
    Hkv, Nk = k.shape[1], k.shape[2]
    group = H // Hkv
    ct = _compute_dtype(q.dtype)
    nq, nk = -(-N // block_size), -(-Nk // block_size)
    qc, kc, vc, doc = (t.to(ct) for t in (q, k, v, do))
    delta = (doc * out.to(ct)).sum(-1)                               # [B, H, N]
    if dlse is not None:
        delta = delta - dlse.to(ct)
    # probabilities are exp(s - lse); rows without keys (lse = -inf) get +inf, so p = 0
    lse_c = lse.to(ct)
    lse_c = torch.where(torch.isinf(lse_c), torch.full_like(lse_c, float("inf")), lse_c)
    dq = torch.zeros((B, H, N, d), dtype=ct, device=q.device)
    dk = torch.zeros((B, Hkv, Nk, d), dtype=ct, device=q.device)
    dv = torch.zeros((B, Hkv, Nk, d), dtype=ct, device=q.device)
    fptr, fidx = fwd_ptr.tolist(), fwd_idx.tolist()
    bptr, bidx = bwd_ptr.tolist(), bwd_idx.tolist()
    for th, heads in enumerate(_head_groups(H, per_head)):
        hs = torch.tensor(heads, device=q.device)
        qh, doh = qc.index_select(1, hs), doc.index_select(1, hs)   # [B, h, N, d]
        kh, vh = kc.index_select(1, hs // group), vc.index_select(1, hs // group)
        lse_h, delta_h = lse_c.index_select(1, hs), delta.index_select(1, hs)
        for i in range(nq):                                          # dQ, one query block
            blocks = _rows(fptr, fidx, th * nq + i)
            if not blocks:
                continue
            q_tok = torch.arange(i * block_size, min((i + 1) * block_size, N), device=q.device)
            k_tok = _token_index(blocks, block_size, Nk, q.device)
            p, ds = _probs_and_dscores(qh, kh, vh, doh, lse_h, delta_h, q_tok, k_tok,
                                       scale, causal, N, Nk)
            dq[:, heads, q_tok.min():q_tok.max() + 1] = (ds @ kh[:, :, k_tok]) * scale
        for j in range(nk):                                          # dK/dV, one key block
            blocks = _rows(bptr, bidx, th * nk + j)
            if not blocks:
                continue
            k_tok = torch.arange(j * block_size, min((j + 1) * block_size, Nk), device=q.device)
            q_tok = _token_index(blocks, block_size, N, q.device)
            p, ds = _probs_and_dscores(qh, kh, vh, doh, lse_h, delta_h, q_tok, k_tok,
                                       scale, causal, N, Nk)
            dv_j = p.transpose(-1, -2) @ doh[:, :, q_tok]            # [B, h, Lk, d]
            dk_j = (ds.transpose(-1, -2) @ qh[:, :, q_tok]) * scale
            sl = slice(int(k_tok[0]), int(k_tok[-1]) + 1)
            if per_head:
                dk[:, heads[0] // group, sl] += dk_j[:, 0]
                dv[:, heads[0] // group, sl] += dv_j[:, 0]
            else:                                                    # sum the query heads of each group
                dk[:, :, sl] += dk_j.view(B, Hkv, group, -1, d).sum(2)
                dv[:, :, sl] += dv_j.view(B, Hkv, group, -1, d).sum(2)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
