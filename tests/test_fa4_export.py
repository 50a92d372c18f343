"""to_fa4_block_sparse: a BlockLayout as FlashAttention-4's block-sparse tensors.

On the CPU (CI) FA4 cannot run, so the tensors are built against a stand-in for
``flash_attn.cute.block_sparsity.BlockSparseTensorsTorch`` (FA4's own NamedTuple has the same
fields) and checked to rebuild the layout's full and partial blocks, forward and transposed.
With a GPU and FA4 installed, FA4 runs on them and must equal ``sparse_attention``, forward
and gradients.
"""
from __future__ import annotations

import sys
import types
from typing import NamedTuple, Optional

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash.integrations.fa4 import fa4_mask_args, to_fa4_block_sparse


class _StandIn(NamedTuple):
    mask_block_cnt: torch.Tensor
    mask_block_idx: torch.Tensor
    full_block_cnt: Optional[torch.Tensor] = None
    full_block_idx: Optional[torch.Tensor] = None
    cu_total_m_blocks: Optional[torch.Tensor] = None
    cu_block_idx_offsets: Optional[torch.Tensor] = None
    block_size: Optional[tuple] = None


def _have_fa4() -> bool:
    try:
        import flash_attn.cute.block_sparsity  # noqa: F401
        return True
    except Exception:
        return False


@pytest.fixture
def fa4_module(monkeypatch):
    if _have_fa4():
        return
    mods = {name: types.ModuleType(name) for name in ("flash_attn", "flash_attn.cute", "flash_attn.cute.block_sparsity")}
    mods["flash_attn.cute.block_sparsity"].BlockSparseTensorsTorch = _StandIn
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


def _dense(cnt, idx, n):
    """bool [B, H, rows, n] of counts [B, H, rows] and left-packed indices [B, H, rows, max]."""
    B, H, rows, width = idx.shape
    valid = torch.arange(width)[None, None, None, :] < cnt[..., None]
    out = torch.zeros(B, H, rows, n + 1, dtype=torch.bool)
    out.scatter_(-1, torch.where(valid, idx.long(), n), True)
    return out[..., :n].numpy()


LAYOUTS = [
    pytest.param(lambda: sf.compile(sf.local(1) | sf.global_blocks(1), 200, block_size=32, causal=True,
                                    num_heads=3), id="local|global-causal-N200-b32"),
    pytest.param(lambda: sf.compile(sf.per_head(sf.bigbird(1, 1, 1), sf.strided(2)), 256, block_size=32,
                                    num_heads=2), id="per-head-N256-b32"),
    pytest.param(lambda: sf.compile(sf.dense(), 96, kv_len=160, block_size=32, causal=True, num_heads=2,
                                    window_size=(40, 0)), id="window-N96-Nk160-b32"),
    pytest.param(lambda: sf.layout_from_block_mask(torch.rand(2, 7, 7, generator=torch.Generator().manual_seed(1)) > 0.5,
                                                   seq_len=200, block_size=32, causal=True),
                 id="device-built-mask-N200-b32"),
]


@pytest.mark.parametrize("make", LAYOUTS)
def test_tensors_rebuild_the_layout(make, fa4_module):
    layout = make()
    fwd, bwd = to_fa4_block_sparse(layout, batch=2)
    H, nq, nk = layout.num_heads, layout.num_q_blocks, layout.num_kv_blocks
    assert fwd.mask_block_cnt.shape == (2, H, nq) and fwd.mask_block_idx.shape[:3] == (2, H, nq)
    assert bwd.mask_block_cnt.shape == (2, H, nk) and fwd.block_size == (layout.block_size,) * 2
    for t in (*fwd[:4], *bwd[:4]):
        assert t.dtype == torch.int32
    full, partial = layout.to_dense("full"), layout.to_dense("partial")
    for b in range(2):
        np.testing.assert_array_equal(_dense(fwd.full_block_cnt, fwd.full_block_idx, nk)[b], full)
        np.testing.assert_array_equal(_dense(fwd.mask_block_cnt, fwd.mask_block_idx, nk)[b], partial)
        np.testing.assert_array_equal(_dense(bwd.full_block_cnt, bwd.full_block_idx, nq)[b],
                                      full.transpose(0, 2, 1))
        np.testing.assert_array_equal(_dense(bwd.mask_block_cnt, bwd.mask_block_idx, nq)[b],
                                      partial.transpose(0, 2, 1))
    # each part ascending within a row, as FA4 expects
    idx, cnt = fwd.mask_block_idx[0], fwd.mask_block_cnt[0]
    for h in range(H):
        for i in range(nq):
            row = idx[h, i, :cnt[h, i]]
            assert torch.all(row[1:] > row[:-1])
    assert fa4_mask_args(layout)["causal"] == layout.causal


def test_bad_layouts_name_the_argument(fa4_module):
    docs = sf.attention.resolve_layout(sf.local(1), seq_len=64, kv_len=64, num_heads=1, block_size=16,
                                       causal=True, cu_seqlens=(0, 30, 64), cu_seqlens_k=(0, 30, 64))
    with pytest.raises(ValueError, match="layout: .*one sequence"):
        to_fa4_block_sparse(docs)
    shifted = sf.compile(sf.local(1), 40, kv_len=300, block_size=32, causal=True)
    with pytest.raises(ValueError, match="layout: .*multiple of block_size"):
        to_fa4_block_sparse(shifted)
    with pytest.raises(TypeError, match="layout must be"):
        to_fa4_block_sparse(sf.local(1))
    with pytest.raises(ValueError, match="batch"):
        to_fa4_block_sparse(sf.compile(sf.local(1), 64, block_size=32), batch=0)


def test_missing_fa4_is_an_import_error(monkeypatch):
    if _have_fa4():
        pytest.skip("FA4 is installed here; the missing-dependency message is checked where it is not")
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    with pytest.raises(ImportError, match="flash-attn-4"):
        to_fa4_block_sparse(sf.compile(sf.local(1), 64, block_size=32))


@pytest.mark.skipif(not torch.cuda.is_available() or not _have_fa4(), reason="needs a GPU with FA4 installed")
@pytest.mark.parametrize("make", [
    pytest.param(lambda: sf.compile(sf.local(2) | sf.global_blocks(1), 1024, block_size=128, causal=True,
                                    num_heads=4), id="local|global-causal-N1024"),
    pytest.param(lambda: sf.compile(sf.bigbird(1, 1, 2), 1000, block_size=128, num_heads=4), id="bigbird-N1000"),
])
def test_fa4_runs_the_tables(make):
    from flash_attn.cute import flash_attn_func

    layout = make()
    g = torch.Generator(device="cuda").manual_seed(0)
    B, H, N, d = 2, layout.num_heads, layout.seq_len, 128
    q, k, v, do = (torch.randn(B, N, H, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    fwd, bwd = to_fa4_block_sparse(layout, batch=B, device="cuda")
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
    out = flash_attn_func(*leaves, block_sparse_tensors=fwd, block_sparse_tensors_bwd=bwd, **fa4_mask_args(layout))
    out = out[0] if isinstance(out, tuple) else out
    grads = torch.autograd.grad(out, leaves, do)
    ref_leaves = [t.detach().transpose(1, 2).requires_grad_(True) for t in (q, k, v)]
    ref = sf.sparse_attention(*ref_leaves, layout)
    ref_grads = torch.autograd.grad(ref, ref_leaves, do.transpose(1, 2))
    scale = ref.float().abs().max()
    assert (out.transpose(1, 2).float() - ref.float()).abs().max() <= 2e-2 * scale
    for got, want in zip(grads, ref_grads):
        assert (got.transpose(1, 2).float() - want.float()).abs().max() <= 3e-2 * want.float().abs().max()
