"""Reproducers of defects found by a reliability probe (issue 12), each fixed."""
import pytest
import torch

import sparseflash as sf


def test_empty_batch_forward_and_backward():
    q = torch.randn(0, 2, 64, 16, requires_grad=True)
    out = sf.sparse_attention(q, q, q, sf.local(1), block_size=16, backend="torch")
    out.sum().backward()
    assert out.shape == (0, 2, 64, 16) and q.grad.shape == q.shape


def test_cpu_autocast():
    q = torch.randn(1, 2, 64, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sf.sparse_attention(q, q, q, sf.local(1), block_size=16, backend="torch")
    out.float().sum().backward()
    ref = sf.sparse_attention(q, q, q, sf.local(1), block_size=16, backend="torch")
    torch.testing.assert_close(out, ref)
    assert torch.isfinite(q.grad).all()


def test_meta_device_gives_shapes():
    q = torch.empty(2, 4, 100, 32, device="meta")
    k = torch.empty(2, 2, 100, 32, device="meta")
    out, lse = sf.sparse_attention(q, k, k, sf.local(1), block_size=32, return_lse=True)
    assert out.device.type == "meta" and out.shape == q.shape and lse.shape == (2, 4, 100)


def test_causal_must_be_a_bool():
    q = torch.zeros(1, 1, 32, 16)
    with pytest.raises(ValueError, match="causal must be a bool"):
        sf.sparse_attention(q, q, q, sf.local(1), block_size=16, causal="no")


def test_vmap_folds_into_the_batch():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 2, 64, 16, generator=g) for _ in range(3))
    f = lambda q, k, v: sf.sparse_attention(q, k, v, sf.local(1), block_size=16, causal=True, backend="torch")
    out = torch.func.vmap(f)(q, k, v)
    want = torch.stack([f(q[i], k[i], v[i]) for i in range(3)])
    torch.testing.assert_close(out, want)
    # a gradient through vmap, and an unmapped argument (k shared by every mapped call)
    grads = torch.func.grad(lambda q: torch.func.vmap(f, in_dims=(0, None, None))(q, k[0], v[0]).sum())(q)
    q2 = q.clone().requires_grad_(True)
    torch.stack([f(q2[i], k[0], v[0]) for i in range(3)]).sum().backward()
    torch.testing.assert_close(grads, q2.grad)
