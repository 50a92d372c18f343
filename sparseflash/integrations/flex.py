"""A BlockLayout as a PyTorch FlexAttention ``BlockMask``.

``flex_attention(q, k, v, block_mask=to_flex_block_mask(layout))`` computes what
``sparse_attention(q, k, v, layout)`` computes. Two grids meet here:

* ours: local row i of the layout is *absolute* query block ``q_pos // b + i``, so it covers
  query rows ``[i*b - q_pos % b, (i+1)*b - q_pos % b)`` of the tensor (the same for keys with
  ``k_pos``);
* Flex's: block I covers query rows ``[I*b, (I+1)*b)``, top-left aligned.

They coincide when ``q_pos % b == k_pos % b == 0`` (square layouts). Otherwise a Flex block
overlaps up to two of our rows and two of our columns: it is stored if any of those four
blocks is, and full only if all four are full (then every pair in it is visible, and none
of its rows or columns lies past the sequence's end). Partial Flex blocks call a
``mask_mod`` that tests the whole token rule of :class:`~sparseflash.BlockLayout`,
stored-block lookup included, so the result is exact on either grid; it is also what
Flex's uncompiled path needs, which ignores the tables and calls ``mask_mod`` on every pair.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Union

import numpy as np
import torch

from ..layout import K_POS, Q_POS, BlockLayout
from ._common import check_one_sequence

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

__all__ = ["to_flex_block_mask", "layout_mask_mod"]


def _check_layout(layout: BlockLayout) -> None:
    check_one_sequence(layout, "a Flex BlockMask holds")


def layout_mask_mod(layout: BlockLayout, device: Union[str, torch.device, None] = None) -> Callable:
    """The layout's token rule (:class:`~sparseflash.BlockLayout` docstring) as a Flex
    ``mask_mod(b, h, q_idx, kv_idx)``: query row ``q_idx`` at position ``t = q_pos + q_idx``
    sees key row ``kv_idx`` at ``u = k_pos + kv_idx`` iff both rows exist, block
    ``(t // b, u // b)`` is stored for head h, and the causal, window and padding tests pass."""
    _check_layout(layout)
    bs, causal, window = layout.block_size, layout.causal, layout.window
    seq_len, kv_len = layout.seq_len, layout.kv_len
    q_pos, k_pos = int(layout.seqs[0, Q_POS]), int(layout.seqs[0, K_POS])
    q0, k0 = q_pos // bs, k_pos // bs
    th, nq, nk = layout.table_heads, layout.num_q_blocks, layout.num_kv_blocks
    blocks = torch.from_numpy(np.ascontiguousarray(layout.to_dense()[:th])).to(device)  # [th, nq, nk]
    keys = None
    if layout.key_padding_mask is not None:
        keys = torch.from_numpy(np.ascontiguousarray(layout.key_padding_mask[0])).to(device)  # [kv_len]

    def mask_mod(b, h, q_idx, kv_idx):
        t = q_idx + q_pos
        u = kv_idx + k_pos
        keep = (q_idx < seq_len) & (kv_idx < kv_len)
        # clamped: the compiled kernel may ask about rows past the end (keep is False there)
        qb = torch.clamp(t // bs - q0, 0, nq - 1)
        kb = torch.clamp(u // bs - k0, 0, nk - 1)
        keep = keep & blocks[h if th > 1 else 0, qb, kb]
        if causal:
            keep = keep & (u <= t)
        if window is not None:
            left, right = window
            if left >= 0:
                keep = keep & (u >= t - left)
            if right >= 0:
                keep = keep & (u <= t + right)
        if keys is not None:
            keep = keep & keys[torch.clamp(kv_idx, 0, kv_len - 1)]
        return keep

    return mask_mod


def _flex_grid(layout: BlockLayout):
    """(stored, full): bool ``[table_heads, cdiv(seq_len, b), cdiv(kv_len, b)]`` on Flex's grid."""
    bs, th = layout.block_size, layout.table_heads
    nq, nk = layout.num_q_blocks, layout.num_kv_blocks
    q_shift = int(layout.seqs[0, Q_POS]) % bs                      # rows our block 0 starts early
    k_shift = int(layout.seqs[0, K_POS]) % bs
    fq, fk = -(-layout.seq_len // bs), -(-layout.kv_len // bs)
    pad = ((0, 0), (0, 1), (0, 1))                                 # a row/column past the end: absent
    ours = {kind: np.pad(layout.to_dense(kind)[:th], pad) for kind in ("any", "full")}  # [th, nq+1, nk+1]
    # Flex block I overlaps our rows I and, when shifted, I + 1 (at most nq: the padding)
    overlaps = [(dr, dc) for dr in {0, int(q_shift > 0)} for dc in {0, int(k_shift > 0)}]
    stored = np.zeros((th, fq, fk), dtype=bool)
    full = np.ones((th, fq, fk), dtype=bool)
    for dr, dc in overlaps:
        stored |= ours["any"][:, dr:dr + fq, dc:dc + fk]
        full &= ours["full"][:, dr:dr + fq, dc:dc + fk]
    return stored, full


def _ordered(dense: np.ndarray, device):
    """Flex's (num_blocks [1, H, FQ], indices [1, H, FQ, FK]) of a bool ``[H, FQ, FK]``:
    each row's blocks first, ascending (a stable sort puts True before False)."""
    num = dense.sum(axis=-1, dtype=np.int32)
    idx = np.argsort(~dense, axis=-1, kind="stable").astype(np.int32)

    def dev(a):
        return torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(0).to(device)

    return dev(num), dev(idx)


def to_flex_block_mask(layout: BlockLayout, *, device: Union[str, torch.device, None] = None,
                       mask_mod: Optional[Callable] = None) -> "BlockMask":
    """The layout as a FlexAttention ``BlockMask`` (``BlockMask.from_kv_blocks``), so that
    ``flex_attention(q, k, v, block_mask=...)`` equals ``sparse_attention(q, k, v, layout)``.

    Args:
        layout: a layout of one sequence (``num_seqs == 1``, not packed), e.g. from
            :func:`sparseflash.compile`; shared or per-head tables (Flex's H dimension is
            ``layout.table_heads``, its batch dimension 1).
        device: where the tables and the mask's lookup tensor go (default CPU).
        mask_mod: replaces the exact rule (:func:`layout_mask_mod`) in partial blocks. The
            compiled Flex kernel calls it only there, so a cheaper rule (e.g. causal alone) is
            enough when it is right on every pair of every partial block; Flex's uncompiled
            path calls it on every pair, so leave it unset there.

    Returns:
        a ``BlockMask`` with ``BLOCK_SIZE = layout.block_size`` and ``seq_lengths =
        (layout.seq_len, layout.kv_len)``; its full blocks skip ``mask_mod``.

    Raises:
        ValueError: for packed documents or per-batch (padding) tables.
    """
    from torch.nn.attention.flex_attention import BlockMask

    _check_layout(layout)
    if mask_mod is None:
        mask_mod = layout_mask_mod(layout, device)
    stored, full = _flex_grid(layout)                              # [th, FQ, FK] each
    kv_num_blocks, kv_indices = _ordered(stored & ~full, device)
    full_kv_num_blocks, full_kv_indices = _ordered(full, device)
    kwargs = dict(kv_num_blocks=kv_num_blocks, kv_indices=kv_indices,
                  full_kv_num_blocks=full_kv_num_blocks, full_kv_indices=full_kv_indices,
                  BLOCK_SIZE=layout.block_size, mask_mod=mask_mod)
    try:
        return BlockMask.from_kv_blocks(**kwargs, seq_lengths=(layout.seq_len, layout.kv_len))
    except TypeError:   # torch < 2.6: no seq_lengths; Flex takes the lengths from the call
        return BlockMask.from_kv_blocks(**kwargs)
