"""A BlockLayout as FlashAttention-4's block-sparse tensors.

FA4 (``flash-attn-4``, the CuTe-DSL kernels in ``flash_attn.cute``) takes block sparsity as
``BlockSparseTensorsTorch(mask_block_cnt, mask_block_idx, full_block_cnt, full_block_idx,
block_size)``: per (batch, head, query block) the *mask* (partial) blocks, which the kernel
masks element by element, and the *full* blocks, which it does not; counts ``[B, H, nq]``,
indices ``[B, H, nq, max]`` padded on the right. The backward takes the transpose, per key
block. Our forward CSR splits each row the same way (full blocks first, then partial), so
the conversion is a re-packing of ``fwd_*`` and ``bwd_*``.

What masks FA4's partial blocks: with no ``mask_mod``, FA4 applies its own causal, window
and sequence-end masks there, which is exactly our token rule for a layout of one sequence
without key padding whose grid starts on FA4's (``q_pos % b == k_pos % b == 0``). Pass the
settings of :func:`fa4_mask_args` with the tensors::

    from flash_attn.cute import flash_attn_func
    fwd, bwd = sf.to_fa4_block_sparse(layout, batch=B, device=q.device)
    out = flash_attn_func(q, k, v, block_sparse_tensors=fwd, block_sparse_tensors_bwd=bwd,
                          **sf.integrations.fa4.fa4_mask_args(layout))[0]   # q: (B, N, H, d)

FA4 is an optional dependency (it needs a Hopper or Blackwell GPU); ``flash_attn`` is
imported only when the tensors are built.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch

from ..layout import K_POS, Q_POS, BlockLayout
from ._common import check_one_sequence

__all__ = ["to_fa4_block_sparse", "fa4_mask_args"]


def _check_layout(layout: BlockLayout) -> None:
    check_one_sequence(layout, "FA4's block-sparse tensors need")
    if layout.key_padding_mask is not None:
        raise ValueError("layout: built with a key_padding_mask, which FA4's partial-block masks cannot "
                         "express without a mask_mod; export the layout without padding")
    bs = layout.block_size
    q_pos, k_pos = int(layout.seqs[0, Q_POS]), int(layout.seqs[0, K_POS])
    if q_pos % bs or k_pos % bs:
        raise ValueError(f"layout: its grid starts {q_pos % bs} query / {k_pos % bs} key tokens into a "
                         f"block (seq_len={layout.seq_len}, kv_len={layout.kv_len}, block_size={bs}); "
                         f"FA4's blocks start at token 0 of q and k, so kv_len - seq_len must be a "
                         f"multiple of block_size")


def _split_rows(ptr: np.ndarray, idx: np.ndarray, nfull: np.ndarray):
    """(full_cnt [R], full_idx [R, F], mask_cnt [R], mask_idx [R, M]) of a CSR whose rows list
    their full entries first: both parts packed left, ascending, padded with 0."""
    rows = ptr.shape[0] - 1
    counts = np.diff(ptr.astype(np.int64))
    row_of = np.repeat(np.arange(rows), counts)                     # [nnz]
    pos = np.arange(idx.shape[0]) - ptr[:-1].astype(np.int64)[row_of]
    full = pos < nfull[row_of]
    mask_cnt = (counts - nfull).astype(np.int32)
    out = []
    for cnt, sel, col in ((nfull.astype(np.int32), full, pos), (mask_cnt, ~full, pos - nfull[row_of])):
        table = np.zeros((rows, max(1, int(cnt.max(initial=0)))), dtype=np.int32)
        table[row_of[sel], col[sel]] = idx[sel]
        out += [cnt, table]
    return out


def _tensors(ptr, idx, nfull, layout: BlockLayout, num_rows: int, batch: int, device):
    from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch

    th, H = layout.table_heads, layout.num_heads
    full_cnt, full_idx, mask_cnt, mask_idx = _split_rows(ptr, idx, nfull)

    def dev(a):     # [th * rows, ...] -> [batch, H, rows, ...], shared dimensions broadcast
        t = torch.from_numpy(np.ascontiguousarray(a)).to(device).reshape(1, th, num_rows, *a.shape[1:])
        return t.expand(batch, H, *t.shape[2:])
    return BlockSparseTensorsTorch(mask_block_cnt=dev(mask_cnt), mask_block_idx=dev(mask_idx),
                                   full_block_cnt=dev(full_cnt), full_block_idx=dev(full_idx),
                                   block_size=(layout.block_size, layout.block_size))


def to_fa4_block_sparse(layout: BlockLayout, *, batch: int = 1,
                        device: Union[str, torch.device, None] = None) -> Tuple[object, object]:
    """FA4's block-sparse tensors for ``layout``: ``(forward, backward)``, two
    ``flash_attn.cute.block_sparsity.BlockSparseTensorsTorch``.

    Args:
        layout: a layout of one sequence without key padding (e.g. from
            :func:`sparseflash.compile`, or a device-built one shared by the batch, whose
            tables are copied to the host once) whose grid starts on token 0 of q and k
            (``kv_len - seq_len`` a multiple of ``block_size``).
        batch: the batch size of the call; the tables are shared (a stride-0 view).
        device: where the tensors go (FA4 needs them on q's GPU).

    Returns:
        ``forward``: counts ``[batch, num_heads, nq]`` and indices ``[batch, num_heads, nq,
        max]`` int32 (key blocks per query block; ``full_*`` skip masking); ``backward``: the
        transpose (query blocks per key block), for ``block_sparse_tensors_bwd``. Both carry
        ``block_size = (b, b)``. Pass :func:`fa4_mask_args` too, so FA4 masks the partial
        blocks by our token rule.

    Raises:
        ImportError: when ``flash_attn.cute`` (``flash-attn-4``) is not installed.
        ValueError: for packed documents, per-batch tables, key padding or a shifted grid.
    """
    _check_layout(layout)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    try:
        import flash_attn.cute.block_sparsity  # noqa: F401
    except ImportError as exc:
        raise ImportError("to_fa4_block_sparse needs FlashAttention-4 (pip install flash-attn-4; "
                          "a Hopper or Blackwell GPU runs it)") from exc
    host = layout.host()          # a device-built layout's tables, copied once (a sync), tails cut
    fwd = _tensors(host.fwd_ptr, host.fwd_idx, host.fwd_nfull, host, host.num_q_blocks, batch, device)
    bwd = _tensors(host.bwd_ptr, host.bwd_idx, host.bwd_nfull, host, host.num_kv_blocks, batch, device)
    return fwd, bwd


def fa4_mask_args(layout: BlockLayout) -> dict:
    """The ``flash_attn_func`` keyword arguments that make FA4 mask partial blocks by the
    layout's token rule: ``causal`` and ``window_size`` (-1 sides as None)."""
    _check_layout(layout)
    left, right = layout.window if layout.window is not None else (-1, -1)
    args = dict(causal=layout.causal)
    if layout.window is not None:
        args["window_size"] = (None if left < 0 else left, None if right < 0 else right)
    return args
