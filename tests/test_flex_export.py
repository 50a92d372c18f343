"""to_flex_block_mask: a BlockLayout as a FlexAttention BlockMask.

Two checks per layout: Flex's (uncompiled, CPU) output equals ``sparse_attention``'s torch
backend, and the BlockMask's tables rebuild the layout's token mask exactly (full blocks
visible everywhere, partial blocks through ``mask_mod``). The second matters because Flex's
uncompiled path ignores the tables and calls ``mask_mod`` on every pair; the compiled kernel
trusts the tables. Flex has no backward on CPU, so gradients are not compared here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash.compiler import compile_sequences
from sparseflash.integrations.flex import layout_mask_mod
from sparseflash.reference import reference_attention

flex = pytest.importorskip("torch.nn.attention.flex_attention")

# uncompiled Flex warns that it is the slow path on every call
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _layouts():
    H = 2
    return [
        pytest.param(sf.compile(sf.local(1) | sf.global_blocks(1), 128, block_size=16, causal=True,
                                num_heads=H), id="local|global-causal-N128-b16"),
        pytest.param(sf.compile(sf.bigbird(1, 1, 1), 100, block_size=16, num_heads=H),
                     id="bigbird-N100-b16"),
        pytest.param(sf.compile(sf.local(2), 40, kv_len=300, block_size=32, causal=True, num_heads=H),
                     id="decode-like-N40-Nk300-b32-causal"),
        pytest.param(sf.compile(sf.local(1) | sf.strided(3), 52, kv_len=70, block_size=16, num_heads=H),
                     id="non-causal-N52-Nk70-b16"),
        pytest.param(sf.compile(sf.per_head(sf.local(1), sf.strided(2) | sf.global_blocks(1)), 90,
                                block_size=16, causal=True, num_heads=H), id="per-head-N90-b16"),
        pytest.param(sf.compile(sf.dense(), 75, kv_len=110, block_size=16, causal=True, num_heads=H,
                                window_size=(20, 0)), id="window-20-N75-Nk110-b16"),
        pytest.param(sf.compile(sf.local(1), 70, kv_len=45, block_size=16, num_heads=H,
                                window_size=(8, 8)), id="cross-window-N70-Nk45-b16"),
        pytest.param(sf.compile(sf.local(2) | sf.global_blocks(1), 100, kv_len=300, block_size=16,
                                causal=True, num_heads=H), id="chunk-N100-Nk300-b16-causal"),
    ]


def _inputs(layout, d=16, Hkv=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    H = layout.num_heads
    Hkv = H if Hkv is None else Hkv
    q = torch.randn(2, H, layout.seq_len, d, generator=g, dtype=torch.float64)
    k = torch.randn(2, Hkv, layout.kv_len, d, generator=g, dtype=torch.float64)
    v = torch.randn(2, Hkv, layout.kv_len, d, generator=g, dtype=torch.float64)
    return q, k, v


def blocks_to_dense(num_blocks, indices, num_cols: int) -> torch.Tensor:
    """Bool ``[..., rows, num_cols]`` of a Flex (num_blocks, indices) pair: row r keeps
    ``indices[..., r, :num_blocks[..., r]]`` (written here: torch's private helper for this
    changed its signature between releases)."""
    taken = torch.arange(indices.shape[-1], device=indices.device) < num_blocks[..., None]  # [..., rows, slots]
    dense = torch.zeros(indices.shape[:-1] + (num_cols + 1,), dtype=torch.bool, device=indices.device)
    dense.scatter_(-1, torch.where(taken, indices.long(), num_cols), True)
    return dense[..., :num_cols]


def flex_token_mask(block_mask, head: int) -> np.ndarray:
    """Bool ``[seq_len, kv_len]``: what the compiled Flex kernel attends for one head: every
    pair of a full block, and the pairs of a partial block that ``mask_mod`` keeps."""
    seq_len, kv_len = block_mask.seq_lengths
    bq, bk = block_mask.BLOCK_SIZE
    h = head if block_mask.kv_num_blocks.shape[1] > 1 else 0
    full = blocks_to_dense(block_mask.full_kv_num_blocks, block_mask.full_kv_indices,
                                  block_mask.full_kv_indices.shape[-1])[0, h]
    partial = blocks_to_dense(block_mask.kv_num_blocks, block_mask.kv_indices,
                                     block_mask.kv_indices.shape[-1])[0, h]
    assert not (full & partial).any(), "a block is both full and partial"

    def tokens(blocks):
        return blocks.repeat_interleave(bq, 0).repeat_interleave(bk, 1)[:seq_len, :kv_len]

    q_idx = torch.arange(seq_len)[:, None]
    kv_idx = torch.arange(kv_len)[None, :]
    keep = block_mask.mask_mod(torch.tensor(0), torch.tensor(head), q_idx, kv_idx)
    return (tokens(full) | (tokens(partial) & keep)).numpy()


@pytest.mark.parametrize("layout", _layouts())
def test_flex_attention_equals_sparse_attention(layout):
    q, k, v = _inputs(layout)
    want = sf.sparse_attention(q, k, v, layout, backend="torch")
    got = flex.flex_attention(q, k, v, block_mask=sf.to_flex_block_mask(layout))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", _layouts())
def test_block_tables_rebuild_the_token_mask(layout):
    block_mask = sf.to_flex_block_mask(layout)
    assert block_mask.seq_lengths == (layout.seq_len, layout.kv_len)
    assert block_mask.kv_num_blocks.shape[:2] == (1, layout.table_heads)
    for h in range(layout.num_heads):
        np.testing.assert_array_equal(flex_token_mask(block_mask, h), layout.to_token_mask(h))


@pytest.mark.parametrize("layout", _layouts())
def test_mask_mod_is_the_layout_token_rule_on_every_pair(layout):
    mask_mod = layout_mask_mod(layout)
    q_idx = torch.arange(layout.seq_len)[:, None]
    kv_idx = torch.arange(layout.kv_len)[None, :]
    for h in range(layout.num_heads):
        got = mask_mod(torch.tensor(0), torch.tensor(h), q_idx, kv_idx).numpy()
        np.testing.assert_array_equal(got, layout.to_token_mask(h))


def test_aligned_square_layout_maps_blocks_one_to_one():
    layout = sf.compile(sf.local(1) | sf.global_blocks(1), 128, block_size=16, causal=True)
    block_mask = sf.to_flex_block_mask(layout)
    full = blocks_to_dense(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, 8)[0, 0]
    partial = blocks_to_dense(block_mask.kv_num_blocks, block_mask.kv_indices, 8)[0, 0]
    np.testing.assert_array_equal(full.numpy(), layout.to_dense("full")[0])
    np.testing.assert_array_equal(partial.numpy(), layout.to_dense("partial")[0])


def test_unaligned_blocks_are_partial_where_our_rows_straddle_flex_rows():
    # 100 queries end at position 300: q_pos = 200 is 8 tokens into a 16-block, so Flex row I
    # holds the end of our row I and the start of our row I + 1
    layout = sf.compile(sf.dense(), 100, kv_len=300, block_size=16, causal=True)
    block_mask = sf.to_flex_block_mask(layout)
    assert int(layout.seqs[0, 4]) % 16 == 8
    assert block_mask.kv_num_blocks.shape[-1] == 7                      # cdiv(100, 16) Flex rows
    full = blocks_to_dense(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, 19)[0, 0]
    assert not full[0].any()                # our row 0 lacks its first 8 rows: nothing full there
    assert full[1:5, :12].all()             # below the diagonal, two full rows of ours stay full
    assert not full[5:].any()               # our last row runs past the end: partial
    for h in range(layout.num_heads):
        np.testing.assert_array_equal(flex_token_mask(block_mask, h), layout.to_token_mask(h))


def test_gqa_with_enable_gqa():
    layout = sf.compile(sf.local(1) | sf.global_blocks(1), 64, block_size=16, causal=True, num_heads=4)
    q, k, v = _inputs(layout, Hkv=2)
    want = sf.sparse_attention(q, k, v, layout, backend="torch")
    got = flex.flex_attention(q, k, v, block_mask=sf.to_flex_block_mask(layout), enable_gqa=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_a_cheaper_mask_mod_replaces_the_exact_rule_in_partial_blocks():
    layout = sf.compile(sf.local(1), 64, block_size=16, causal=True)

    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx

    block_mask = sf.to_flex_block_mask(layout, mask_mod=causal)
    assert block_mask.mask_mod is causal
    np.testing.assert_array_equal(flex_token_mask(block_mask, 0), layout.to_token_mask(0))


def test_one_sequence_layout_with_padding_masks_the_padded_keys():
    kpm = np.ones((1, 80), dtype=bool)
    kpm[0, 60:] = False
    layout = compile_sequences(sf.local(1) | sf.global_blocks(1), [80], [80], block_size=16,
                               causal=False, num_heads=1, packed=False, key_padding_mask=kpm)
    assert layout.num_seqs == 1 and not layout.packed
    q, k, v = _inputs(layout)
    want, _ = reference_attention(q, k, v, layout)      # the layout's rule, padding included
    got = flex.flex_attention(q, k, v, block_mask=sf.to_flex_block_mask(layout))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(flex_token_mask(sf.to_flex_block_mask(layout), 0),
                                  layout.to_token_mask(0))


def test_packed_and_per_batch_layouts_are_refused():
    packed = compile_sequences(sf.local(1), [32, 48], [32, 48], block_size=16, causal=True,
                               num_heads=1, packed=True)
    with pytest.raises(ValueError, match="packed documents"):
        sf.to_flex_block_mask(packed)
    kpm = np.ones((2, 64), dtype=bool)
    kpm[1, 40:] = False
    per_batch = compile_sequences(sf.local(1), [64, 64], [64, 64], block_size=16, causal=False,
                                  num_heads=1, packed=False, key_padding_mask=kpm)
    with pytest.raises(ValueError, match="per-batch tables"):
        sf.to_flex_block_mask(per_batch)
    with pytest.raises(TypeError, match="BlockLayout"):
        sf.to_flex_block_mask(sf.local(1))
