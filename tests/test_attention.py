"""sparse_attention: kernels and torch backend vs the float64 reference.

On CPU the Triton kernels run under the interpreter (tests/conftest.py sets TRITON_INTERPRET=1
when there is no CUDA); with CUDA the same cases run the compiled kernels, and the tests
marked ``gpu`` add bf16/fp16 cases and a large one.

Tolerance (FlashAttention rule): our max error vs float64 must be at most 3x the error of a
same-dtype eager PyTorch implementation, plus a tiny absolute floor.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash.attention import sparse_attention
from sparseflash.reference import reference_attention

# the interpreter warns on every scalar index read (numpy 2.x); it says nothing about our code
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning")

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
FLOOR = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3, torch.float64: 1e-10}
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


# ---------------------------------------------------------------------- helpers
def eager_attention(q, k, v, layout, scale):
    """Same-dtype eager attention: matmuls in q's dtype, softmax in fp32 (the error yardstick)."""
    H, Hkv = q.shape[1], k.shape[1]
    k = k.repeat_interleave(H // Hkv, 1)
    v = v.repeat_interleave(H // Hkv, 1)
    mask = torch.stack([torch.from_numpy(layout.to_token_mask(h)) for h in range(H)]).to(q.device)
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.float().masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0).to(q.dtype)
    return p @ v


def make_inputs(B, H, Hkv, N, Nk, d, dtype, device=DEVICE, transposed=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)

    if transposed:  # (B, N, H, d) storage seen as (B, H, N, d): non-contiguous strides
        q = rnd(B, N, H, d).transpose(1, 2)
        k = rnd(B, Nk, Hkv, d).transpose(1, 2)
        v = rnd(B, Nk, Hkv, d).transpose(1, 2)
    else:
        q, k, v = rnd(B, H, N, d), rnd(B, Hkv, Nk, d), rnd(B, Hkv, Nk, d)
    do = rnd(B, H, N, d)
    return q, k, v, do


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def check_against_reference(layout, q, k, v, do, backend, scale=None, check_eager=True):
    """Forward, lse, dq, dk, dv vs float64; error <= 3x same-dtype eager + floor; no NaN."""
    dtype = q.dtype
    d = q.shape[-1]
    scale_ = 1.0 / math.sqrt(d) if scale is None else scale
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out, lse = sparse_attention(q, k, v, layout, block_size=layout.block_size, causal=layout.causal,
                                scale=scale, return_lse=True, backend=backend)
    assert out.shape == q.shape and out.dtype == dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    grads = torch.autograd.grad(out, (q, k, v), do)
    for name, t in zip(("out", "dq", "dk", "dv"), (out, *grads)):
        assert torch.isfinite(t).all(), f"{name} has NaN/Inf"
    assert not torch.isnan(lse).any() and not (lse == float("inf")).any()

    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, ref_lse = reference_attention(q64, k64, v64, layout, scale=scale)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
    # lse: -inf exactly on rows without keys, close elsewhere
    assert torch.equal(torch.isinf(lse).cpu(), torch.isinf(ref_lse).cpu())
    fin = torch.isfinite(ref_lse)
    assert max_err(lse[fin], ref_lse[fin]) < 1e-3

    if check_eager:
        qe, ke, ve = (t.detach().clone().requires_grad_() for t in (q, k, v))
        eo = eager_attention(qe, ke, ve, layout, scale_)
        eager = (eo, *torch.autograd.grad(eo, (qe, ke, ve), do))
    for i, name in enumerate(("out", "dq", "dk", "dv")):
        ours = (out, *grads)[i]
        e = max_err(ours, (ref, *ref_grads)[i])
        bound = (3 * max_err(eager[i], (ref, *ref_grads)[i]) if check_eager else 0.0) + FLOOR[dtype]
        assert e <= bound, f"{name}: error {e:.3e} > bound {bound:.3e}"
    return out, lse, grads


def empty_rows(layout):
    """(head, query token) pairs whose token mask row is empty."""
    return [(h, int(t)) for h in range(layout.num_heads)
            for t in np.flatnonzero(~layout.to_token_mask(h).any(1))]


# ---------------------------------------------------------------------- the case matrix
P = sf
f16, f32, bf16 = torch.float16, torch.float32, torch.bfloat16
# (id, pattern, B, H, Hkv, N, Nk, d, block, causal, dtype)
CASES = [
    ("dense-B1-H2-N128-D64-bs64", P.dense(), 1, 2, 2, 128, 128, 64, 64, False, f16),
    ("causal-B2-H2-N200-D64-bs64", P.dense(), 2, 2, 2, 200, 200, 64, 64, True, f16),
    ("local1-B1-H2-N256-D32-bs32", P.local(1), 1, 2, 2, 256, 256, 32, 32, False, f32),
    ("butterfly-B1-H2-N256-D32-bs32", P.butterfly(), 1, 2, 2, 256, 256, 32, 32, False, f16),
    ("random2-B1-H2-N200-D32-bs32", P.random(2, seed=3), 1, 2, 2, 200, 200, 32, 32, False, f32),
    ("bigbird-B1-H2-N300-D32-bs32", P.bigbird(1, 1, 1), 1, 2, 2, 300, 300, 32, 32, False, f16),
    ("perhead-GQA-B1-H4-Hkv2-N150-D32-bs32-causal",
     P.per_head(P.local(1), P.dense(), P.butterfly(), P.random(1)), 1, 4, 2, 150, 150, 32, 32, True, f16),
    ("MQA-B1-H4-Hkv1-N100-D64-bs64-causal", P.dense(), 1, 4, 1, 100, 100, 64, 64, True, f32),
    ("kv>q-B1-H2-N100-Nk230-D32-bs64", P.local(1), 1, 2, 2, 100, 230, 32, 64, False, f16),
    ("kv>q-causal-B1-H2-N100-Nk230-D32-bs64", P.dense(), 1, 2, 2, 100, 230, 32, 64, True, f16),
    ("kv<q-causal-B1-H2-N230-Nk100-D32-bs64", P.dense(), 1, 2, 2, 230, 100, 32, 64, True, f16),
    ("D80-B2-H2-N100-bs64", P.dense(), 2, 2, 2, 100, 100, 80, 64, False, f16),
    ("D80-fp32-B1-H2-N130-bs32-causal", P.local(1), 1, 2, 2, 130, 130, 80, 32, True, f32),
    ("bs128-B1-H2-N200-D32-causal", P.dense(), 1, 2, 2, 200, 200, 32, 128, True, f16),
    ("bf16-B1-H2-N96-D32-bs32-causal", P.local(1), 1, 2, 2, 96, 96, 32, 32, True, bf16),
]


def _case_params(cases):
    return [pytest.param(*c[1:], id=c[0]) for c in cases]


@pytest.mark.parametrize("pattern,B,H,Hkv,N,Nk,d,bs,causal,dtype", _case_params(CASES))
def test_triton_matches_reference(pattern, B, H, Hkv, N, Nk, d, bs, causal, dtype):
    layout = sf.compile(pattern, N, kv_len=Nk, block_size=bs, causal=causal, num_heads=H)
    q, k, v, do = make_inputs(B, H, Hkv, N, Nk, d, dtype)
    out, lse, grads = check_against_reference(layout, q, k, v, do, backend="triton")
    for h, t in empty_rows(layout):  # rows without keys: exactly zero output and gradient
        assert (out[:, h, t] == 0).all() and (grads[0][:, h, t] == 0).all()


@pytest.mark.parametrize("pattern,B,H,Hkv,N,Nk,d,bs,causal,dtype", _case_params(CASES))
def test_torch_backend_matches_reference(pattern, B, H, Hkv, N, Nk, d, bs, causal, dtype):
    layout = sf.compile(pattern, N, kv_len=Nk, block_size=bs, causal=causal, num_heads=H)
    q, k, v, do = make_inputs(B, H, Hkv, N, Nk, d, dtype, device="cpu")
    check_against_reference(layout, q, k, v, do, backend="torch")


def test_kv_shorter_causal_has_empty_rows():
    # the case above only means something if rows really are empty
    layout = sf.compile(sf.dense(), 230, kv_len=100, block_size=64, causal=True, num_heads=2)
    assert len(empty_rows(layout)) == 2 * 130


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_explicitly_empty_query_block(backend):
    """A from_mask layout with an all-False block row: output 0, lse -inf, gradient 0."""
    mask = np.ones((4, 4), bool)
    mask[2] = False
    layout = sf.compile(sf.from_mask(mask), 128, block_size=32, num_heads=2)
    assert layout.row_counts()[0, 2] == 0
    q, k, v, do = make_inputs(1, 2, 2, 128, 128, 32, torch.float32,
                              device=DEVICE if backend == "triton" else "cpu")
    out, lse, grads = check_against_reference(layout, q, k, v, do, backend=backend)
    assert (out[:, :, 64:96] == 0).all()
    assert torch.isinf(lse[:, :, 64:96]).all() and (lse[:, :, 64:96] < 0).all()
    assert (grads[0][:, :, 64:96] == 0).all()
    assert torch.isfinite(lse[:, :, :64]).all()


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_transposed_strided_inputs(backend):
    """(B, N, H, d).transpose(1, 2) views are read in place, with the same result."""
    dev = DEVICE if backend == "triton" else "cpu"
    layout = sf.compile(sf.local(1), 150, block_size=32, causal=True, num_heads=4)
    q, k, v, do = make_inputs(2, 4, 2, 150, 150, 32, torch.float16, device=dev, transposed=True)
    assert not q.is_contiguous()
    check_against_reference(layout, q, k, v, do, backend=backend)
    out_t = sparse_attention(q, k, v, layout, block_size=32, causal=True, backend=backend)
    out_c = sparse_attention(q.contiguous(), k.contiguous(), v.contiguous(), layout,
                             block_size=32, causal=True, backend=backend)
    assert torch.equal(out_t, out_c)


@pytest.mark.parametrize("case", [
    ("perhead-GQA-B1-H4-Hkv2-N150-D80-bs32-causal", P.per_head(P.local(1), P.dense(), P.butterfly(), P.dense()),
     1, 4, 2, 150, 150, 80, 32, True, f16, True),
    ("kv<q-causal-B2-H2-N130-Nk70-D32-bs64", P.dense(), 2, 2, 2, 130, 70, 32, 64, True, f32, False),
], ids=lambda c: c[0])
def test_tensor_descriptor_path(case, monkeypatch):
    """The TMA (tensor-descriptor) loads, forced on: zero-fill replaces the masks."""
    from sparseflash.kernels import launch

    monkeypatch.setattr(launch, "USE_TMA", True)
    _, pattern, B, H, Hkv, N, Nk, d, bs, causal, dtype, transposed = case
    layout = sf.compile(pattern, N, kv_len=Nk, block_size=bs, causal=causal, num_heads=H)
    q, k, v, do = make_inputs(B, H, Hkv, N, Nk, d, dtype, transposed=transposed)
    check_against_reference(layout, q, k, v, do, backend="triton")


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_heavy_rows_launch_order(causal):
    """Global rows/columns are launched first (a 1-D scheduled grid); results stay exact."""
    from sparseflash.kernels import launch

    pattern = sf.local(0) | sf.global_blocks(1)
    layout = sf.compile(pattern, 512, block_size=32, causal=causal, num_heads=4)
    t = layout.to("cpu")
    cache = {}
    order = launch._launch_order(t.fwd_ptr, cache, kind="fwd", batch=2, num_heads=4, group=1,
                                 per_head=False, num_tiles=16, tile=32, block_size=32, reverse=causal)
    if causal:  # the causal mask removes the global row: every row walks <= 2 blocks
        assert order is None
    else:
        assert order is not None and sorted(order.tolist()) == list(range(2 * 4 * 16))
        assert order[0].item() % 16 == 0                           # the global row leads
    col_order = launch._launch_order(t.bwd_ptr, cache, kind="dkdv", batch=2, num_heads=4, group=2,
                                     per_head=False, num_tiles=16, tile=32, block_size=32, reverse=False)
    assert col_order is not None and col_order[0].item() % 16 == 0   # the global column leads
    q, k, v, do = make_inputs(2, 4, 2, 512, 512, 16, torch.float32)
    check_against_reference(layout, q, k, v, do, backend="triton")


def _plans(layout, forget=False):
    """The launch plans cached for a layout (``forget``: drop them first; layouts are shared
    between tests through the compile cache)."""
    plans = layout.to(DEVICE).plans
    if forget:
        plans.clear()
    return plans.get("plans", {})


@pytest.mark.parametrize("d,dtype", [(32, torch.float32), (64, bf16), (128, torch.float16)],
                         ids=["d32-fp32", "d64-bf16", "d128-fp16"])
def test_launch_plans_are_reused_per_shape_and_stay_exact(d, dtype):
    """Repeated calls reuse one cached launch plan per (shapes, strides, dtype); a new batch
    size or new strides get their own plan, and every call matches the float64 reference.
    On the GPU the plans hold the compiled binaries (the direct-launch path runs)."""
    if dtype == bf16 and not HAS_CUDA:
        dtype = torch.float16          # the interpreter's bf16 dots are upcast; keep CPU cheap
    layout = sf.compile(sf.local(1) | sf.global_blocks(1), 256, block_size=64, num_heads=2)
    _plans(layout, forget=True)
    calls = [(1, False, 0), (1, False, 1), (2, False, 2), (1, True, 3), (1, False, 4)]
    for B, transposed, seed in calls:
        q, k, v, do = make_inputs(B, 2, 2, 256, 256, d, dtype, transposed=transposed, seed=seed)
        check_against_reference(layout, q, k, v, do, backend="triton")
    plans = _plans(layout)
    kinds = sorted(key[0] for key in plans)
    assert kinds == ["bwd"] * 3 + ["fwd"] * 3, kinds        # three shapes/strides, fwd and bwd each
    if HAS_CUDA:
        for plan in plans.values():
            launches = [plan.launch] if hasattr(plan, "launch") else [plan.dq, plan.dkdv]
            assert all(launch.binary is not None for launch in launches)


@gpu
@needs_cuda
def test_gpu_planned_calls_skip_the_jit_unless_a_launch_hook_is_set(monkeypatch):
    """After the first call, forward and backward launch the cached binaries directly (no
    ``JITFunction.run``); with a launch hook registered (a profiler) every launch goes
    through the JIT again, so the hook sees it."""
    from triton import knobs

    from sparseflash.kernels import launch

    layout = sf.compile(sf.local(1), 512, block_size=128, num_heads=2)
    q, k, v, do = make_inputs(1, 2, 2, 512, 512, 64, bf16, device="cuda")
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def step():
        return torch.autograd.grad(sparse_attention(q, k, v, layout), (q, k, v), do)

    first = step()
    calls = []
    kernels = [launch._fwd_kernel, launch._bwd_dq_kernel, launch._bwd_dkdv_kernel,
               launch._dq_convert_kernel]
    try:        # on a Hopper GPU the forward and dK/dV are Gluon kernels (the dQ kernel's
        from sparseflash.kernels import hopper       # statistics run before the fused dK/dV)
        kernels += [hopper._hopper_fwd_kernel, hopper._hopper_dkdv_kernel]
    except ImportError:
        pass
    # the Hopper backward's four launches need a Hopper GPU with that backward on
    # (SPARSEFLASH_HOPPER_BWD=0 or USE_HOPPER_BWD = False leaves the portable three)
    hopper_bwd = torch.cuda.get_device_capability()[0] == 9 and launch.USE_HOPPER_BWD is not False
    for kernel in kernels:
        real = kernel.run
        monkeypatch.setattr(kernel, "run", lambda *a, _real=real, **kw: calls.append(1) or _real(*a, **kw))
    again = step()
    assert calls == [], f"{len(calls)} launches went through JITFunction.run"
    # dK, dV bitwise; dQ to its last bf16 bit (on a Hopper GPU the fused backward sums it with
    # atomic adds, whose order varies)
    assert torch.equal(first[1], again[1]) and torch.equal(first[2], again[2])
    assert (first[0].float() - again[0].float()).abs().max() <= 2 ** -7 * first[0].float().abs().max()
    seen = []
    hook = lambda metadata: seen.append(metadata)   # noqa: E731
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        step()
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    # three launches a step on the portable path (forward, dQ, dK/dV), four on Hopper's
    # (forward, the dQ kernel's statistics, dK/dV with dQ fused, the fp32 dQ's conversion),
    # each through the JIT and seen by the hook
    launches = 4 if hopper_bwd else 3
    assert len(calls) == launches and len(seen) == launches, (len(calls), len(seen))


@pytest.mark.parametrize("tma", [False, True], ids=["pointers", "descriptors"])
def test_launch_plans_do_not_keep_inputs_alive(tma, monkeypatch):
    """A plan lives as long as its (cached) layout: it must hold no input tensor, or every
    q/k/v ever passed would stay allocated (the 1M-token benchmark ran out of memory)."""
    import gc
    import weakref

    from sparseflash.kernels import launch

    monkeypatch.setattr(launch, "USE_TMA", tma)
    layout = sf.compile(sf.local(1), 128, block_size=64, num_heads=2)
    _plans(layout, forget=True)
    q, k, v, do = make_inputs(1, 2, 2, 128, 128, 32, torch.float16)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    grads = torch.autograd.grad(sparse_attention(q, k, v, layout, block_size=64, backend="triton"),
                                (q, k, v), do)
    assert sorted(key[0] for key in _plans(layout)) == ["bwd", "fwd"]
    refs = [weakref.ref(t) for t in (q, k, v, do, *grads)]
    del q, k, v, do, grads
    gc.collect()
    assert [r() is None for r in refs] == [True] * len(refs)


def test_misaligned_inputs_get_no_cached_plan():
    """Triton specialises on 16-byte pointer alignment: a call with a misaligned view is
    launched through the JIT every time and leaves no plan behind; results stay exact."""
    layout = sf.compile(sf.local(1), 128, block_size=32, num_heads=2)
    _plans(layout, forget=True)
    q, k, v, do = make_inputs(1, 2, 2, 128, 128, 32, torch.float16)
    q_off = torch.empty(q.numel() + 1, dtype=q.dtype, device=q.device)[1:].view(q.shape)
    q_off.copy_(q)
    assert q_off.data_ptr() % 16
    check_against_reference(layout, q_off, k, v, do, backend="triton")
    assert not _plans(layout)
    check_against_reference(layout, q, k, v, do, backend="triton")
    assert sorted(key[0] for key in _plans(layout)) == ["bwd", "fwd"]


def test_custom_scale():
    layout = sf.compile(sf.dense(), 64, block_size=32, causal=True, num_heads=2)
    q, k, v, do = make_inputs(1, 2, 2, 64, 64, 32, torch.float32)
    check_against_reference(layout, q, k, v, do, backend="triton", scale=0.3)


@pytest.mark.parametrize("scale", [-0.3, -5.0], ids=["negative", "negative-natural-units"])
def test_negative_scale(scale):
    """A negative ``scale`` (any finite float is accepted): the kernels scale a tile's row max
    after taking it from the raw scores, so they run ``-q`` with ``|scale|``
    (``launch._positive_scale``) and negate dQ. Without that the Triton kernels returned NaN.
    Forward, LSE and gradients against float64, a length that ends inside a block, GQA; and the
    decode kernel (no gradient) against the forward's last row."""
    layout = sf.compile(sf.local(1) | sf.global_blocks(1), 100, block_size=32, causal=True,
                        num_heads=4)
    q, k, v, do = make_inputs(1, 4, 2, 100, 100, 32, torch.float32, seed=3)
    out, lse, _ = check_against_reference(layout, q, k, v, do, backend="triton", scale=scale)
    positive = sparse_attention(q, k, v, layout, scale=-scale, backend="triton")
    assert max_err(out, positive) > 1e-2          # the sign matters (the test can fail)
    with torch.no_grad():                         # one query at the end: the decode kernel
        last = sparse_attention(q[:, :, -1:], k, v, sf.local(1) | sf.global_blocks(1),
                                block_size=32, causal=True, scale=scale, backend="triton")
    assert max_err(last, out[:, :, -1:]) < 1e-5


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_lse_gradient(backend):
    """A loss on the returned lse flows back into q and k (dS gains P * dlse)."""
    dev = DEVICE if backend == "triton" else "cpu"
    layout = sf.compile(sf.local(1), 96, block_size=32, causal=True, num_heads=2)
    q, k, v, do = make_inputs(1, 2, 2, 96, 96, 32, torch.float32, device=dev)
    w = torch.randn(1, 2, 96, generator=torch.Generator().manual_seed(1)).to(dev)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out, lse = sparse_attention(q, k, v, layout, block_size=32, causal=True, return_lse=True,
                                backend=backend)
    g = torch.autograd.grad((out * do).sum() + (lse * w).sum(), (q, k, v))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ro, rl = reference_attention(q64, k64, v64, layout)
    rg = torch.autograd.grad((ro * do.double()).sum() + (rl * w.double()).sum(), (q64, k64, v64))
    for a, b in zip(g, rg):
        assert max_err(a, b) < 1e-4


def test_backward_is_deterministic():
    layout = sf.compile(sf.per_head(sf.dense(), sf.local(1), sf.butterfly(), sf.dense()), 200,
                        block_size=32, causal=True, num_heads=4)
    q, k, v, do = make_inputs(1, 4, 1, 200, 200, 32, torch.float16)   # MQA: 4 heads share dK/dV
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    runs = [torch.autograd.grad(sparse_attention(q, k, v, layout, block_size=32, causal=True,
                                                 backend="triton"), (q, k, v), do) for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_shared_and_per_head_tables_agree():
    """The same pattern as a shared table and as per_head copies gives identical output."""
    shared = sf.compile(sf.local(1), 100, block_size=32, causal=True, num_heads=2)
    ph = sf.compile(sf.per_head(sf.local(1), sf.local(1)), 100, block_size=32, causal=True, num_heads=2)
    assert shared.table_heads == 1 and ph.table_heads == 2
    q, k, v, _ = make_inputs(1, 2, 2, 100, 100, 32, torch.float32)
    a = sparse_attention(q, k, v, shared, block_size=32, causal=True, backend="triton")
    b = sparse_attention(q, k, v, ph, block_size=32, causal=True, backend="triton")
    assert torch.equal(a, b)


def test_pattern_compiled_on_the_fly_equals_layout():
    q, k, v, _ = make_inputs(1, 2, 2, 96, 96, 32, torch.float32)
    a = sparse_attention(q, k, v, sf.local(1), block_size=32, causal=True, backend="triton")
    layout = sf.compile(sf.local(1), 96, block_size=32, causal=True, num_heads=2)
    b = sparse_attention(q, k, v, layout, block_size=32, causal=True, backend="triton")
    assert torch.equal(a, b)


def test_auto_backend_on_cpu_is_torch():
    q, k, v, _ = make_inputs(1, 2, 2, 64, 64, 16, torch.float64, device="cpu")
    out = sparse_attention(q, k, v, sf.dense(), block_size=32)          # float64: torch only
    ref, _ = reference_attention(q, k, v, sf.compile(sf.dense(), 64, block_size=32, num_heads=2))
    assert max_err(out, ref) < 1e-12


# ---------------------------------------------------------------------- property-based
def test_random_block_masks_hypothesis():
    hypothesis = pytest.importorskip("hypothesis", reason="pip install hypothesis")
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=12, deadline=None, derandomize=True)
    @given(st.data())
    def prop(data):
        bs = 32
        N = data.draw(st.integers(1, 4 * bs), label="seq_len")
        Nk = data.draw(st.integers(1, 4 * bs), label="kv_len")
        causal = data.draw(st.booleans(), label="causal")
        H = data.draw(st.sampled_from([1, 2]), label="heads")
        frame = max(N, Nk)         # the call's own blocks, aligned bottom-right
        nq, nk = -(-frame // bs) - (frame - N) // bs, -(-frame // bs) - (frame - Nk) // bs
        bits = data.draw(st.lists(st.booleans(), min_size=H * nq * nk, max_size=H * nq * nk))
        mask = np.array(bits, bool).reshape(H, nq, nk)
        layout = sf.compile(sf.from_mask(mask), N, kv_len=Nk, block_size=bs, causal=causal, num_heads=H)
        q, k, v, do = make_inputs(1, H, 1, N, Nk, 16, torch.float32, seed=N * 1000 + Nk)
        check_against_reference(layout, q, k, v, do, backend="triton")

    prop()


# ---------------------------------------------------------------------- gradcheck
def test_gradcheck_torch_backend_float64():
    layout = sf.compile(sf.local(1) | sf.global_blocks(1), 40, kv_len=50, block_size=16,
                        causal=True, num_heads=2)
    q, k, v, _ = make_inputs(1, 2, 1, 40, 50, 16, torch.float64, device="cpu")
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def f(q, k, v):
        out, lse = sparse_attention(q, k, v, layout, block_size=16, causal=True, return_lse=True,
                                    backend="torch")
        return out, torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)

    # fast_mode: random projections of the Jacobian, seconds instead of minutes
    assert torch.autograd.gradcheck(f, (q, k, v), eps=1e-6, atol=1e-5, fast_mode=True)


def test_eager_calls_skip_the_signature_binding(monkeypatch):
    """``_EagerAttention.apply`` leaves out torch's per-call ``inspect.signature(...).bind``
    outside functorch transforms (12 µs of host time a call on this CPU), with the same output
    and gradients; under ``torch.func.grad`` it takes torch's path, binding included."""
    import inspect
    import types

    import torch.autograd.function as autograd_function

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 64, 16, generator=g, dtype=torch.float64) for _ in range(3))

    def f(q, k, v):
        return sparse_attention(q, k, v, sf.local(1), block_size=16, causal=True, backend="torch")
    want = f(q, k, v)
    want_grads = torch.func.grad(lambda q: f(q, k, v).sum())(q)
    calls = []

    def signature(fn):
        calls.append(fn)
        return inspect.signature(fn)
    monkeypatch.setattr(autograd_function, "inspect", types.SimpleNamespace(signature=signature))
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = f(qg, kg, vg)
    out.sum().backward()
    assert calls == []
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    torch.testing.assert_close(qg.grad, want_grads, rtol=0, atol=0)
    grads = torch.func.grad(lambda q: f(q, k, v).sum())(q)
    assert len(calls) == 1
    torch.testing.assert_close(grads, want_grads, rtol=0, atol=0)


# ---------------------------------------------------------------------- torch.library / compile
def test_custom_op_opcheck():
    """Both op pairs pass torch.library's checks: the pattern as its text, a layout as its tables."""
    layout = sf.compile(sf.local(1), 64, block_size=32, causal=True, num_heads=2)
    q, k, v, _ = make_inputs(1, 2, 2, 64, 64, 16, torch.float32, device="cpu")
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    tables = tuple(torch.from_numpy(np.array(getattr(layout, name))) for name in
                   ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull"))
    seqs = [int(x) for x in layout.seqs.ravel()]
    for host_tables in (True, False):
        torch.library.opcheck(torch.ops.sparseflash.attention_tables_fwd.default,
                              (q, k, v, *tables, seqs, 64, 64, 32, True, 1, -1, -1, False,
                               host_tables, 0.25, "torch", None, None, None))
    torch.library.opcheck(torch.ops.sparseflash.attention_fwd.default,
                          (q, k, v, "local(1)", 32, True, 0.25, "torch", -1, -1, None, None, None))
    # packed documents, a window and a key-padding mask travel through the op as tensors/ints
    cu = torch.tensor([0, 20, 64], dtype=torch.int32)
    kpm = torch.ones(1, 64, dtype=torch.bool)
    kpm[0, 10:13] = False
    torch.library.opcheck(torch.ops.sparseflash.attention_fwd.default,
                          (q, k, v, "local(1)", 32, True, 0.25, "torch", 16, 0, cu, cu, kpm.view(torch.int8)))


class _TinyAttention(torch.nn.Module):
    def __init__(self, pattern, backend="torch"):
        super().__init__()
        self.pattern, self.backend = pattern, backend

    def forward(self, q, k, v):
        return sparse_attention(q * 2.0, k, v, self.pattern, block_size=32, causal=True,
                                backend=self.backend) + 1.0


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("kind", ["pattern", "layout"])
def test_torch_compile_fullgraph_no_graph_break(kind, dynamic):
    """fullgraph=True fails on any graph break; a Pattern is compiled at trace time, and
    symbolic sizes are specialized (the layout depends on the exact lengths)."""
    pattern = sf.local(1) | sf.global_blocks(1)          # a fresh pattern: not compiled yet
    if kind == "layout":
        pattern = sf.compile(sf.local(2), 64, block_size=32, causal=True, num_heads=2)
    model = _TinyAttention(pattern)
    q, k, v, do = make_inputs(1, 2, 2, 64, 64, 16, torch.float32, device="cpu")

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    q1, k1, v1 = (t.clone().requires_grad_() for t in (q, k, v))
    q2, k2, v2 = (t.clone().requires_grad_() for t in (q, k, v))
    out_c = compiled(q1, k1, v1)
    out_e = model(q2, k2, v2)
    assert torch.allclose(out_c, out_e)
    gc = torch.autograd.grad(out_c, (q1, k1, v1), do)
    ge = torch.autograd.grad(out_e, (q2, k2, v2), do)
    for a, b in zip(gc, ge):
        assert torch.allclose(a, b)


# ---------------------------------------------------------------------- bad input
def _qkv(B=1, H=2, Hkv=2, N=64, Nk=64, d=32, dtype=torch.float32):
    return make_inputs(B, H, Hkv, N, Nk, d, dtype, device="cpu")[:3]


def _raises(exc, match, *args, **kw):
    with pytest.raises(exc, match=match):
        sparse_attention(*args, **kw)


def test_bad_inputs():
    q, k, v = _qkv()
    pat = sf.dense()
    _raises(TypeError, "q must be a torch.Tensor", q.numpy(), k, v, pat, backend="torch")
    _raises(TypeError, "k must be a floating", q, k.to(torch.int32), v, pat, backend="torch")
    _raises(TypeError, "share a dtype", q, k.half(), v, pat, backend="torch")
    _raises(ValueError, "v must be 4-D", q, k, v[0], pat, backend="torch")
    _raises(ValueError, "k and v must have the same shape", q, k, v[:, :, :32], pat, backend="torch")
    _raises(ValueError, "k: batch", q, *_qkv(B=2)[1:], pat, backend="torch")
    _raises(ValueError, "k: head_dim", q, *_qkv(d=16)[1:], pat, backend="torch")
    _raises(ValueError, "head_dim must be in", *_qkv(d=8), pat, backend="torch")
    _raises(ValueError, "head_dim must be in", *_qkv(d=320), pat, backend="torch")
    _raises(ValueError, "multiple of", *_qkv(H=3, Hkv=2), pat, backend="torch")
    _raises(ValueError, "one device", q, k.to("meta"), v, pat, backend="torch")
    _raises(ValueError, "backend must be one of", q, k, v, pat, backend="cuda")
    _raises(TypeError, "pattern must be", q, k, v, "local(1)", backend="torch")
    _raises(TypeError, "not supported by backend 'triton'",
            *(t.to(DEVICE) for t in _qkv(dtype=torch.float64)), pat, backend="triton")


@pytest.mark.parametrize("field,kw,match", [
    ("seq_len", dict(seq_len=96), "seq_len=96"),
    ("kv_len", dict(kv_len=96), "kv_len=96"),
    ("block_size", dict(block_size=64), "block_size=64"),
    ("causal", dict(causal=True), "causal=True"),
    ("num_heads", dict(num_heads=4), "num_heads=4"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_layout_mismatch_says_which_differs(field, kw, match):
    args = dict(seq_len=64, kv_len=64, block_size=32, causal=False, num_heads=2)
    args.update(kw)
    layout = sf.compile(sf.dense(), args["seq_len"], kv_len=args["kv_len"], block_size=args["block_size"],
                        causal=args["causal"], num_heads=args["num_heads"])
    q, k, v = _qkv()
    _raises(ValueError, match, q, k, v, layout, block_size=32, causal=False, backend="torch")


def test_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = _qkv()
    _raises(ValueError, "TRITON_INTERPRET=1", q, k, v, sf.dense(), block_size=32, backend="triton")


# ---------------------------------------------------------------------- compiled kernels (GPU)
GPU_CASES = [
    ("gpu-dense-B2-H4-N1000-D128-bs128-bf16", P.dense(), 2, 4, 4, 1000, 1000, 128, 128, False, bf16),
    ("gpu-causal-B2-H8-Hkv2-N1500-D64-bs128-bf16", P.dense(), 2, 8, 2, 1500, 1500, 64, 128, True, bf16),
    ("gpu-local-B1-H4-N2048-D96-bs64-fp16", P.local(2), 1, 4, 4, 2048, 2048, 96, 64, True, f16),
    ("gpu-butterfly-B1-H4-N1024-D256-bs128-bf16", P.butterfly(), 1, 4, 4, 1024, 1024, 256, 128, False, bf16),
    ("gpu-bigbird-B1-H4-N1300-Nk900-D192-bs64-fp16", P.bigbird(1, 1, 2), 1, 4, 4, 1300, 900, 192, 64, False, f16),
    ("gpu-perhead-B1-H2-N700-Nk300-D80-bs32-causal-bf16", P.per_head(P.dense(), P.local(1)),
     1, 2, 1, 700, 300, 80, 32, True, bf16),
]


@gpu
@needs_cuda
@pytest.mark.parametrize("pattern,B,H,Hkv,N,Nk,d,bs,causal,dtype", _case_params(GPU_CASES))
def test_gpu_compiled_kernels(pattern, B, H, Hkv, N, Nk, d, bs, causal, dtype):
    assert os.environ.get("TRITON_INTERPRET") != "1"
    layout = sf.compile(pattern, N, kv_len=Nk, block_size=bs, causal=causal, num_heads=H)
    q, k, v, do = make_inputs(B, H, Hkv, N, Nk, d, dtype, device="cuda")
    check_against_reference(layout, q, k, v, do, backend="triton")


@gpu
@needs_cuda
@pytest.mark.parametrize("causal", [False, True], ids=["dense", "causal"])
def test_gpu_large_n16k_d128(causal):
    """N=16K, d=128 bf16 vs SDPA in fp32 (a float64 N x N reference would not fit)."""
    import torch.nn.functional as F

    q, k, v, do = make_inputs(1, 4, 4, 16384, 16384, 128, bf16, device="cuda")
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = sparse_attention(q, k, v, sf.dense(), causal=causal)
    g = torch.autograd.grad(out, (q, k, v), do)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
    rg = torch.autograd.grad(ref, (q, k, v), do.float())
    for name, a, b in zip(("out", "dq", "dk", "dv"), (out, *g), (ref, *rg)):
        assert torch.isfinite(a).all(), name
        rel = ((a.float() - b).norm() / b.norm()).item()
        assert rel < 1e-2, f"{name}: relative error {rel:.2e}"


@gpu
@needs_cuda
def test_gpu_torch_compile_inductor_fullgraph():
    """Inductor traces the custom ops with the Triton kernels: same values, same gradients."""
    model = _TinyAttention(sf.local(1) | sf.global_blocks(1), backend="triton")
    q, k, v, do = make_inputs(1, 2, 2, 256, 256, 64, bf16, device="cuda")
    compiled = torch.compile(model, fullgraph=True)
    q1, k1, v1 = (t.clone().requires_grad_() for t in (q, k, v))
    q2, k2, v2 = (t.clone().requires_grad_() for t in (q, k, v))
    out_c, out_e = compiled(q1, k1, v1), model(q2, k2, v2)
    assert torch.allclose(out_c.float(), out_e.float(), atol=2e-2)
    for a, b in zip(torch.autograd.grad(out_c, (q1, k1, v1), do),
                    torch.autograd.grad(out_e, (q2, k2, v2), do)):
        assert torch.allclose(a.float(), b.float(), atol=2e-2)


def test_direct_launch_passes_what_tritons_launcher_passes(monkeypatch):
    """``launch._DirectLaunch`` (the cached launch of a binary with tensor descriptors) hands
    Triton's C launcher the arguments Triton's own ``binary.run`` path hands it (a kernel of
    two descriptors around a pointer, an int and a constexpr; one descriptor without
    metadata), and fills a descriptor's TMA map once per base address. Triton 3.6's
    launcher objects, with the C launcher and the map fill stubbed out (no GPU here)."""
    from types import SimpleNamespace

    from triton.backends.nvidia import driver as nvidia
    from triton.tools.tensor_descriptor import TensorDescriptor

    from sparseflash.kernels import launch

    fills = []

    def fill(arg, meta):                      # stands for make_tensordesc_arg's driver call
        if meta is None:
            return [arg.base, *arg.shape, *arg.strides, False, *arg.shape, *arg.strides]
        fills.append(arg.base.data_ptr())
        return [("map", arg.base.data_ptr(), tuple(arg.block_shape), meta["swizzle"]),
                *arg.shape, *arg.strides]
    monkeypatch.setattr(nvidia, "make_tensordesc_arg", fill)
    received = []
    signature = {"a": "tensordesc<fp16[32,32]>", "x": "*fp32", "b": "tensordesc<fp16[16,32]>",
                 "c": "tensordesc<fp16[16,32]>", "n": "i32", "C": "constexpr"}
    meta = [dict(swizzle=128), None, dict(swizzle=64)]
    run = object.__new__(nvidia.CudaLauncher)
    run.launch = nvidia.wrap_handle_tensordesc(lambda *a: received.append(a), signature, meta)
    run.global_scratch_size = run.profile_scratch_size = 0
    run.global_scratch_align = run.profile_scratch_align = 1
    run.launch_cooperative_grid, run.launch_pdl, run.num_ctas = False, False, 1
    binary = SimpleNamespace(run=run, function=77, packed_metadata=(4, 1, 0))

    def template(rows, cols, block):
        t = torch.zeros(rows, cols, dtype=torch.float16)
        return launch._rebased(TensorDescriptor(t, [rows, cols], [cols, 1], block), None)
    descs = {0: template(64, 32, [32, 32]), 2: template(48, 32, [16, 32]),
             3: template(48, 32, [16, 32])}
    direct = launch._DirectLaunch.of(binary, 4, descs)
    assert direct is not None
    tail = (5, 3)
    grid = (2, 3, 1)
    kept = []            # (alive, so that every new tensor has a fresh address)
    for _ in range(3):   # new tensors each time: fresh addresses, then ones seen before
        kept.append((torch.randn(64, 32).half(), torch.randn(48, 32).half(),
                     torch.randn(48, 32).half()))
        for a, b, c in [kept[-1]] * 2:
            x = torch.randn(4)
            head = (a, x, b, c)
            described = [launch._rebased(descs[i], t) if i in descs else t for i, t in enumerate(head)]
            binary.run(*grid, 9, binary.function, binary.packed_metadata, None, None, None,
                       *described, *tail)
            direct(grid, 9, head, tail)
            want, got = received[-2:]
            assert len(want) == len(got) and all(
                w is g or (not torch.is_tensor(w) and w == g) for w, g in zip(want, got)), (want, got)
    # the reference path filled 2 maps a call (6 calls); the direct path 2 per new pair of
    # addresses (3 pairs, each seen twice)
    assert len(fills) == 6 * 2 + 3 * 2, len(fills)
    # the direct path keeps no tensor (a descriptor without metadata passes its base each call)
    assert not any(torch.is_tensor(x) for maps in direct.maps for filled in maps.values()
                   for x in filled)
    # a binary that needs scratch memory keeps Triton's path
    run.global_scratch_size = 64
    assert launch._DirectLaunch.of(binary, 4, descs) is None


@pytest.mark.parametrize("hopper,fused,stats_tma", [(False, False, False), (True, False, True),
                                                     (True, True, False), (True, True, True)])
def test_backward_workspace_views(hopper, fused, stats_tma):
    """``launch._bwd_workspace``: lse2 and delta are the (B, H, N) statistics at offset
    ``pad`` of two 16-byte aligned rows, the fused dQ's (B, H, pad + N, d) accumulator follows
    them, nothing overlaps, and the buffer starts at zero where the plan needs it to."""
    from types import SimpleNamespace

    from sparseflash.kernels import launch

    B, H, N, d, pad = 2, 3, 100, 16, 64
    plan = SimpleNamespace(hopper=hopper, fused_dq=fused, stats_tma=stats_tma)
    work, lse2, delta, row1, dq_acc = launch._bwd_workspace(plan, B, H, N, d, pad, "cpu")
    width = launch._stat_width(B * H * N, pad)
    assert width % 4 == 0 and width >= B * H * N + 2 * pad
    assert lse2.shape == delta.shape == (B, H, N) and lse2.is_contiguous() and delta.is_contiguous()
    base = work.data_ptr()
    assert lse2.data_ptr() == base + 4 * pad and delta.data_ptr() == base + 4 * (width + pad)
    assert (row1 is None) == (not hopper) and (hopper is False or row1.data_ptr() == base + 4 * width)
    assert (dq_acc is None) == (not fused)
    if fused:
        assert dq_acc.data_ptr() == base + 8 * width and dq_acc.numel() == B * H * (pad + N) * d
    assert work.numel() == 2 * width + (B * H * (pad + N) * d if fused else 0)
    work.zero_()
    lse2.fill_(1.0)
    delta.fill_(2.0)
    assert work.sum().item() == B * H * N * 3.0        # disjoint, inside the buffer
    if fused or stats_tma:
        work2 = launch._bwd_workspace(plan, B, H, N, d, pad, "cpu")[0]
        assert not work2.any()
