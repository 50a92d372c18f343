"""SparseSelfAttention: the module against its own projections + a dense reference.

The reference is written out by hand from the module's parameters: the fused in_proj split
into q, k, v, then :func:`sparseflash.reference.reference_attention` over the layout's token
mask (or, for a dense causal pattern, ``F.scaled_dot_product_attention``), then out_proj.
Everything runs on CPU (torch backend) in float64.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

import sparseflash as sf
from sparseflash.nn import SparseSelfAttention
from sparseflash.reference import reference_attention, token_mask

E, H = 64, 4                                        # head_dim 16
PATTERN = sf.local(1) | sf.global_blocks(1)


def make(pattern=PATTERN, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("block_size", 16)
    module = SparseSelfAttention(E, kwargs.pop("num_heads", H), pattern, dtype=torch.float64, **kwargs)
    with torch.no_grad():                            # non-zero biases, so the test sees them
        for p in module.parameters():
            if p.dim() == 1:
                p.normal_()
    return module


def reference(module, x, key_padding_mask=None):
    """The module's computation, by hand: projections around dense masked attention."""
    B, N, _ = x.shape
    H, Hkv, d = module.num_heads, module.num_kv_heads, module.head_dim
    q, k, v = F.linear(x, module.in_proj.weight, module.in_proj.bias).split((H * d, Hkv * d, Hkv * d), -1)
    q, k, v = (t.reshape(B, N, -1, d).transpose(1, 2) for t in (q, k, v))
    layout = sf.compile(module.pattern, N, block_size=module.block_size, causal=module.causal,
                        num_heads=H, window_size=module.window_size) \
        if isinstance(module.pattern, sf.Pattern) else module.pattern
    mask = token_mask(layout, 1)                                         # [1, H, N, N]
    if key_padding_mask is not None:
        mask = mask & key_padding_mask[:, None, None, :]
    out, lse = reference_attention(q, k, v, mask=mask)
    out = out.to(x.dtype).transpose(1, 2).reshape(B, N, H * d)
    return F.linear(out, module.out_proj.weight, module.out_proj.bias), lse


def grads(module, x, fn):
    module.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    out = fn(x)
    (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum().backward()
    return [x.grad, *(p.grad.clone() for p in module.parameters())]


def assert_all_close(a, b, **tol):
    assert len(a) == len(b)
    for u, w in zip(a, b):
        torch.testing.assert_close(u, w, **tol)


def x_of(B=2, N=72, dtype=torch.float64, seed=2):
    return torch.randn(B, N, E, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------------- against the reference
@pytest.mark.parametrize("kwargs", [
    pytest.param(dict(causal=True), id="local|global-causal"),
    pytest.param(dict(causal=False), id="local|global"),
    pytest.param(dict(causal=True, num_kv_heads=2), id="gqa-2kv"),
    pytest.param(dict(causal=True, num_kv_heads=1, bias=False), id="mqa-no-bias"),
    pytest.param(dict(causal=True, window_size=(20, 0)), id="window-20"),
])
def test_forward_and_gradients_match_the_reference(kwargs):
    module = make(**kwargs)
    x = x_of()
    out, lse = module(x, return_lse=True)
    want, want_lse = reference(module, x)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(lse, want_lse)
    assert_all_close(grads(module, x, module), grads(module, x, lambda x: reference(module, x)[0]))


def test_dense_causal_pattern_equals_sdpa():
    module = make(sf.dense(), causal=True)
    x = x_of()
    B, N, _ = x.shape

    def sdpa(x):
        q, k, v = module.in_proj(x).split(E, -1)
        q, k, v = (t.reshape(B, N, H, -1).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return module.out_proj(o.transpose(1, 2).reshape(B, N, E))

    torch.testing.assert_close(module(x), sdpa(x))
    assert_all_close(grads(module, x, module), grads(module, x, sdpa))


def test_float32_module_matches_the_float64_reference():
    module = make(causal=True).float()
    x = x_of(dtype=torch.float32)
    want, _ = reference(module, x)
    torch.testing.assert_close(module(x), want.float(), rtol=1e-4, atol=1e-4)


def test_key_padding_mask_true_means_attend():
    module = make(causal=False)
    x = x_of()
    kpm = torch.ones(2, 72, dtype=torch.bool)
    kpm[1, 50:] = False                                     # batch element 1: last 22 keys are padding
    want, _ = reference(module, x, kpm)
    torch.testing.assert_close(module(x, kpm), want)
    assert_all_close(grads(module, x, lambda x: module(x, kpm)),
                     grads(module, x, lambda x: reference(module, x, kpm)[0]))
    # padded keys change nothing that attends to them only through the mask
    x2 = x.clone()
    x2[1, 50:] += 100.0
    torch.testing.assert_close(module(x2, kpm)[1, :50], module(x, kpm)[1, :50])


def test_key_padding_mask_must_be_bool():
    module = make()
    with pytest.raises(TypeError, match="True = attend"):
        module(x_of(), torch.zeros(2, 72))                 # an additive float mask


def test_packed_documents_attend_only_within_themselves():
    module = make(causal=True)
    x = x_of(B=1, N=80)
    cu = torch.tensor([0, 30, 80], dtype=torch.int32)
    got = module(x, cu_seqlens=cu)
    torch.testing.assert_close(got[:, :30], module(x[:, :30]))
    torch.testing.assert_close(got[:, 30:], module(x[:, 30:]))


def test_sequence_first_input():
    module = make(causal=True)
    x = x_of()
    seq_first = make(causal=True, batch_first=False)
    seq_first.load_state_dict(module.state_dict())
    torch.testing.assert_close(seq_first(x.transpose(0, 1)), module(x).transpose(0, 1))


def test_block_layout_brings_its_own_settings():
    layout = sf.compile(PATTERN, 72, block_size=16, causal=True, num_heads=H)
    module = make(layout, block_size=128)                       # defaults: the layout's win
    assert (module.block_size, module.causal) == (16, True)
    x = x_of()
    torch.testing.assert_close(module(x), reference(module, x)[0])
    with pytest.raises(ValueError, match="block_size=32 conflicts"):
        make(layout, block_size=32)
    with pytest.raises(ValueError, match="num_heads"):
        make(layout, num_heads=2)


def test_a_module_holding_a_layout_deep_copies_and_pickles():
    """copy.deepcopy (EMA copies, trainers) and pickle rebuild a layout through its
    constructor: host layouts with documents, padding and windows, and device-built ones."""
    import copy
    import pickle

    from sparseflash.attention import resolve_layout

    host = sf.compile(PATTERN, 72, block_size=16, causal=True, num_heads=H)
    docs = resolve_layout(PATTERN, seq_len=72, kv_len=72, num_heads=H, block_size=16, causal=True,
                          window=(20, 0), cu_seqlens=(0, 30, 72), cu_seqlens_k=(0, 30, 72))
    padded = resolve_layout(PATTERN, seq_len=72, kv_len=72, num_heads=H, block_size=16, causal=True,
                            key_padding_mask=np.arange(72)[None, :] < np.array([[72], [40]]), batch=2)
    scores = torch.randn(2, H, 5, 5, generator=torch.Generator().manual_seed(0))
    device = sf.topk_layout(scores, 2, seq_len=72, block_size=16, causal=True)
    for layout in (host, docs, padded, device):
        for twin in (copy.deepcopy(layout), pickle.loads(pickle.dumps(layout))):
            assert twin is not layout
            assert twin._serial is None if layout.on_device else twin._serial != layout._serial
            assert (twin.on_device, twin.packed, twin.window, twin.num_seqs) == \
                (layout.on_device, layout.packed, layout.window, layout.num_seqs)
            for seq in range(layout.num_seqs):
                np.testing.assert_array_equal(twin.to_dense(seq=seq), layout.to_dense(seq=seq))
    module = make(host)
    twin = copy.deepcopy(module)
    x = x_of()
    torch.testing.assert_close(twin(x), module(x))


# ---------------------------------------------------------------------- dropout
def test_dropout_in_training_and_a_no_op_in_eval():
    module = make(dropout=0.3)
    x = x_of()
    torch.manual_seed(0)
    a = module(x)
    torch.manual_seed(0)
    torch.testing.assert_close(module(x), a)                  # the seed reproduces the mask
    torch.manual_seed(1)
    assert not torch.allclose(module(x), a)                   # another seed, another mask
    assert not torch.allclose(a, reference(module, x)[0])     # dropout acted
    module.eval()
    torch.testing.assert_close(module(x), reference(module, x)[0])


# ---------------------------------------------------------------------- argument checks
@pytest.mark.parametrize("kwargs, error, match", [
    pytest.param(dict(embed_dim=66), ValueError, "multiple of num_heads", id="embed_dim"),
    pytest.param(dict(embed_dim=32), ValueError, "head_dim", id="head_dim-too-small"),
    pytest.param(dict(num_heads=0), ValueError, "num_heads", id="num_heads"),
    pytest.param(dict(num_kv_heads=3), ValueError, "num_kv_heads", id="num_kv_heads"),
    pytest.param(dict(pattern="local(1)"), TypeError, "pattern", id="pattern"),
    pytest.param(dict(dropout=1.0), ValueError, "dropout", id="dropout"),
    pytest.param(dict(causal=1), TypeError, "causal", id="causal"),
    pytest.param(dict(block_size=16.0), TypeError, "block_size", id="block_size"),
    pytest.param(dict(window_size=(4,)), ValueError, "window_size", id="window_size"),
    pytest.param(dict(batch_first="yes"), TypeError, "batch_first", id="batch_first"),
])
def test_bad_arguments_name_themselves(kwargs, error, match):
    args = dict(embed_dim=E, num_heads=H, pattern=PATTERN)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        SparseSelfAttention(args.pop("embed_dim"), args.pop("num_heads"), args.pop("pattern"), **args)


def test_bad_input_shape_names_x():
    with pytest.raises(ValueError, match="embed_dim=64"):
        make()(torch.randn(2, 10, 32, dtype=torch.float64))


# ---------------------------------------------------------------------- checkpoint, compile
def test_activation_checkpointing_gives_the_same_gradients():
    module = make(causal=True, num_kv_heads=2)
    x = x_of()

    def checkpointed(x):
        return torch.utils.checkpoint.checkpoint(module, x, use_reentrant=False)

    assert_all_close(grads(module, x, checkpointed), grads(module, x, module))


def test_torch_compile_matches_eager():
    module = make(causal=True, num_kv_heads=2).float()
    x = x_of(B=1, N=40, dtype=torch.float32)
    compiled = torch.compile(module)
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-5, atol=1e-5)


def test_torch_compile_gradients_match_eager():
    module = make(causal=True, num_kv_heads=2).float()
    x = x_of(B=1, N=40, dtype=torch.float32)
    compiled = torch.compile(module)
    assert_all_close(grads(module, x, compiled), grads(module, x, module), rtol=1e-5, atol=1e-5)
