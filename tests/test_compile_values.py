"""Patterns and layouts are values under torch.compile and torch.export.

A Pattern reaches the custom ops as its text (``str(pattern)``), a layout as its tables:
equal patterns share a graph, a saved export program runs in a new process, the FX graph
cache hits across processes, nothing process-wide keeps a pattern alive, and a layout whose
tables are built in the graph (top-k) traces as one graph with the attention. CPU tests use
the torch backend and aot_eager unless they test inductor; the GPU test runs under
``torch.cuda.set_sync_debug_mode("error")``.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash import attention
from sparseflash.attention import sparse_attention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_CUDA = torch.cuda.is_available()


def _qkv(B=1, H=2, N=64, d=16, requires_grad=False, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v, do = (torch.randn(B, H, N, d, generator=g).to(device, dtype) for _ in range(4))
    if requires_grad:
        q, k, v = (t.requires_grad_() for t in (q, k, v))
    return q, k, v, do


def _refused(match: str):
    """A ValueError the call raises while dynamo traces it: with fullgraph=True dynamo re-raises
    it as ``Unsupported`` ("Observed exception"), whose text quotes ours."""
    return pytest.raises((ValueError, torch._dynamo.exc.Unsupported), match=match)


def _ops_in(gm) -> list:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_function" and "sparseflash" in str(n.target)]


class _CountingBackend:
    """A torch.compile backend that keeps the graphs calling sparseflash ops (aot_eager runs them)."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        from torch._dynamo.backends.debugging import aot_eager

        if _ops_in(gm):
            self.graphs.append(gm)
        return aot_eager(gm, example_inputs)


# ---------------------------------------------------------------------- patterns as values
def test_equal_patterns_give_one_graph():
    backend = _CountingBackend()

    @torch.compile(fullgraph=True, backend=backend)
    def f(q, k, v, pattern):
        return sparse_attention(q, k, v, pattern, block_size=16, causal=True, backend="torch")

    q, k, v, _ = _qkv()
    outs = [f(q, k, v, sf.local(1) | sf.global_blocks(1)) for _ in range(3)]   # three equal objects
    assert len(backend.graphs) == 1
    assert _ops_in(backend.graphs[0]) == ["sparseflash.attention_fwd.default"]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    f(q, k, v, sf.local(2))                                  # a different value: a new graph
    assert len(backend.graphs) == 2


def test_pattern_built_inside_the_compiled_function():
    def f(q, k, v):
        pattern = sf.local(1) | sf.global_blocks([0, -1]) | sf.random(1, seed=3)
        return sparse_attention(q, k, v, pattern, block_size=16, causal=True, backend="torch")

    q, k, v, do = _qkv(requires_grad=True)
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v)
    ref = f(q, k, v)
    torch.testing.assert_close(out, ref)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), do), torch.autograd.grad(ref, (q, k, v), do)):
        torch.testing.assert_close(a, b)


def test_host_layout_built_inside_the_compiled_function():
    """sf.compile inside the compiled function: the layout is compiled at trace time and its
    tables enter the graph as constants."""
    backend = _CountingBackend()

    def f(q, k, v):
        layout = sf.compile(sf.local(1) | sf.global_blocks(1), 64, block_size=16, causal=True, num_heads=2)
        return sparse_attention(q, k, v, layout, backend="torch")

    q, k, v, do = _qkv(requires_grad=True)
    out = torch.compile(f, fullgraph=True, backend=backend)(q, k, v)
    ref = f(q, k, v)
    torch.testing.assert_close(out, ref)
    assert _ops_in(backend.graphs[0]) == ["sparseflash.attention_tables_fwd.default"]
    for a, b in zip(torch.autograd.grad(out, (q, k, v), do), torch.autograd.grad(ref, (q, k, v), do)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["from_mask", "from_fn"])
def test_pattern_without_text_form_travels_as_its_tables(kind):
    """from_mask/from_fn print as ``<...>``, which names the data but does not carry it: such a
    pattern is compiled for the traced lengths and its tables enter the graph as constants."""
    mask = np.random.default_rng(0).random((4, 4)) < 0.5
    np.fill_diagonal(mask, True)
    pattern = sf.from_mask(mask) if kind == "from_mask" else sf.from_fn(lambda i, j: (i + j) % 3 == 0)
    pattern = pattern | sf.local(0)
    assert not pattern.has_text_form
    backend = _CountingBackend()
    q, k, v, _ = _qkv()
    f = torch.compile(lambda q, k, v: sparse_attention(q, k, v, pattern, block_size=16, backend="torch"),
                      fullgraph=True, backend=backend)
    torch.testing.assert_close(f(q, k, v), sparse_attention(q, k, v, pattern, block_size=16, backend="torch"))
    assert _ops_in(backend.graphs[0]) == ["sparseflash.attention_tables_fwd.default"]


def test_pattern_without_text_form_is_guarded_by_its_data():
    """Such a pattern reaches the graph as its data (torch 2.11's dynamo cannot pass the object):
    an equal from_mask shares the graph, and a from_fn of the same code but another closure
    does not (functions are guarded by their code; the leaf is guarded by identity)."""
    backend = _CountingBackend()
    f = torch.compile(lambda q, k, v, p: sparse_attention(q, k, v, p, block_size=16, backend="torch"),
                      fullgraph=True, backend=backend)
    q, k, v, _ = _qkv()
    mask = np.eye(4, dtype=bool)
    f(q, k, v, sf.from_mask(mask) | sf.local(0))
    f(q, k, v, sf.from_mask(mask.copy()) | sf.local(0))
    assert len(backend.graphs) == 1
    for w in (0, 1):
        pattern = sf.from_fn((lambda w: lambda i, j: abs(i - j) <= w)(w)) & sf.dense()
        torch.testing.assert_close(f(q, k, v, pattern),
                                   sparse_attention(q, k, v, pattern, block_size=16, backend="torch"))
    assert len(backend.graphs) == 3


def test_dynamic_shapes_resolve_the_pattern_from_the_actual_lengths():
    backend = _CountingBackend()
    pattern = sf.local(1) | sf.global_blocks(1)
    f = torch.compile(lambda q, k, v: sparse_attention(q, k, v, pattern, block_size=16, causal=True,
                                                       backend="torch"),
                      fullgraph=True, backend=backend, dynamic=True)
    compiled = []
    for N in (48, 64, 80):
        q, k, v, _ = _qkv(N=N)
        torch.testing.assert_close(f(q, k, v), sparse_attention(q, k, v, pattern, block_size=16,
                                                                 causal=True, backend="torch"))
        compiled.append(len(backend.graphs))
    assert compiled[0] >= 1 and compiled[1:] == compiled[:1] * 2       # no new graph per length


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_packed_documents_under_compile(dynamic):
    """cu_seqlens (and cu_seqlens_k) under torch.compile(fullgraph=True): their values are data,
    read inside the op when it runs (not at trace time), so one graph serves other offsets;
    forward and gradients equal the eager call's, and bad offsets are still refused with the
    eager call's message, raised when the op runs."""
    torch._dynamo.reset()
    backend = _CountingBackend()
    pattern = sf.local(1) | sf.global_blocks(1)

    def f(q, k, v, cu, cu_k):
        return sparse_attention(q, k, v, pattern, block_size=16, causal=True, cu_seqlens=cu,
                                cu_seqlens_k=cu_k, backend="torch")
    compiled = torch.compile(f, fullgraph=True, backend=backend, dynamic=dynamic)
    graphs = []
    for q_lens, k_lens in (([30, 2, 32], [45, 2, 50]), ([1, 40, 23, 9], [3, 41, 30, 9])):
        cu = torch.tensor(np.cumsum([0] + q_lens), dtype=torch.int32)
        cu_k = torch.tensor(np.cumsum([0] + k_lens), dtype=torch.int32)
        q = _qkv(N=sum(q_lens), requires_grad=True)[0]
        k, v, _, _ = _qkv(N=sum(k_lens), requires_grad=True, seed=1)
        do = torch.randn_like(q)
        out_c = compiled(q, k, v, cu, cu_k)
        grads_c = torch.autograd.grad(out_c, (q, k, v), do)
        out_e = f(q, k, v, cu, cu_k)
        grads_e = torch.autograd.grad(out_e, (q, k, v), do)
        torch.testing.assert_close(out_c, out_e)
        for a, b in zip(grads_c, grads_e):
            torch.testing.assert_close(a, b)
        graphs.append(len(backend.graphs))
    assert graphs[0] >= 1
    if dynamic:
        assert graphs[1] == graphs[0]                        # no new graph for other offsets
    q, k, v, _ = _qkv(N=64)
    with pytest.raises(ValueError, match="cu_seqlens must end at the total number of tokens 64"):
        compiled(q, k, v, torch.tensor([0, 10, 60], dtype=torch.int32), None)     # when the op runs
    with _refused("cu_seqlens_k must have as many documents"):                    # at trace time
        compiled(q, k, v, torch.tensor([0, 10, 64], dtype=torch.int32),
                 torch.tensor([0, 64], dtype=torch.int32))


def test_a_float_scale_under_compile():
    """A float ``scale`` under torch.compile(fullgraph=True): with dynamic=True, and called with
    several scales (dynamo then makes the float symbolic), the checks trace and every result
    equals the eager call's; a non-finite scale is still refused."""
    q, k, v, _ = _qkv()

    def f(q, k, v, scale):
        return sparse_attention(q, k, v, sf.local(1), block_size=16, scale=scale, backend="torch")
    for dynamic in (True, None):
        torch._dynamo.reset()
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager", dynamic=dynamic)
        for scale in (0.05, 0.07, 0.5):
            torch.testing.assert_close(compiled(q, k, v, scale), f(q, k, v, scale))
    with _refused("scale must be a finite float"):
        compiled(q, k, v, float("nan"))


def test_alibi_slopes_held_by_the_function_while_heads_turn_symbolic():
    """ALiBi slopes that the compiled function holds (a constant of the trace, its shape
    fixed) while the head count is symbolic: the same function's code compiled again for
    other head counts, so dynamo makes ``num_heads`` (and the batch) symbolic. The shape check
    traces, both slope shapes give the eager call's results, and a wrong shape is still
    refused. (Found by tests/fuzz/fuzz_compile.py, seed 209 after 201: the check compared
    tuples of sizes, which dynamo could not decide with symbolic sizes, and refused valid
    slopes.)"""
    def attend(q, k, v, slopes):
        def f(q, k, v):                       # one code object: its frame state is shared
            return sparse_attention(q, k, v, sf.local(1), block_size=16, causal=True,
                                    alibi_slopes=slopes, backend="torch")
        return torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v), f(q, k, v)

    torch._dynamo.reset()
    for B, H, N, shape in ((2, 4, 40, None), (2, 2, 24, "heads"), (2, 2, 24, "batch-heads"),
                           (3, 6, 24, "heads"), (3, 6, 24, "batch-heads")):
        q, _, _, _ = _qkv(B=B, H=H, N=N, seed=H)
        k, v = (torch.randn(B, 1, N, 16) for _ in range(2))
        slopes = None if shape is None else torch.rand(H) if shape == "heads" else torch.rand(B, H)
        compiled, eager = attend(q, k, v, slopes)
        torch.testing.assert_close(compiled, eager)
    with _refused("alibi_slopes must be a float32 tensor of shape"):
        attend(q, k, v, torch.rand(H + 1))

def test_a_pattern_passed_under_compile_can_be_collected():
    assert not hasattr(attention, "_PATTERNS")
    pattern = sf.local(1) | sf.global_blocks(2) | sf.strided(3)      # no other test builds it
    dead = weakref.ref(pattern)
    f = torch.compile(lambda q, k, v, p: sparse_attention(q, k, v, p, block_size=16, backend="torch"),
                      fullgraph=True, backend="aot_eager")
    q, k, v, _ = _qkv()
    f(q, k, v, pattern)
    del pattern, f
    torch._dynamo.reset()
    gc.collect()
    assert dead() is None


def test_host_layouts_travel_by_serial_each_with_its_own_graph():
    """A host layout reaches the trace-time table lookup as its serial number (a constant;
    torch 2.11's dynamo cannot pass the object): two layouts give two graphs with their own
    tables, and a layout stays collectable (the serial registry is weak)."""
    from sparseflash.layout import _LIVE_HOST_LAYOUTS

    backend = _CountingBackend()
    f = torch.compile(lambda q, k, v, layout: sparse_attention(q, k, v, layout, backend="torch"),
                      fullgraph=True, backend=backend)
    q, k, v, _ = _qkv()
    for w in (0, 2):
        layout = sf.compile(sf.local(w), 64, block_size=16, causal=True, num_heads=2, cache=False)
        torch.testing.assert_close(f(q, k, v, layout), sparse_attention(q, k, v, layout, backend="torch"))
    assert len(backend.graphs) == 2
    serial, dead = layout._serial, weakref.ref(layout)
    assert _LIVE_HOST_LAYOUTS[serial] is layout
    del layout, f, backend
    torch._dynamo.reset()
    gc.collect()
    assert dead() is None and serial not in _LIVE_HOST_LAYOUTS


# ---------------------------------------------------------------------- layouts with tensor tables
def _topk_layout_by_hand(scores: torch.Tensor, k: int, *, seq_len: int, block_size: int) -> sf.BlockLayout:
    """The top-k layout of the contract with ``sf.topk_layout``, built with plain torch ops (no
    host reads): per head and query block the k best key blocks, all marked partial.
    ``scores``: ``[H, nq, nk]`` (one table set for the batch) or ``[B, H, nq, nk]`` (one per
    batch element: ``packed`` False, ``num_seqs = B``, seqs rows from the shapes)."""
    B, H, nq, nk = scores.shape if scores.dim() == 4 else (1, *scores.shape)
    dev = scores.device
    idx = scores.topk(k, dim=-1).indices.sort(dim=-1).values.reshape(B * H, nq, k)  # [B*H, nq, k]
    rows = B * H * nq
    fwd_ptr = (torch.arange(rows + 1, device=dev) * k).to(torch.int32)
    fwd_idx = idx.reshape(-1).to(torch.int32)
    col = (torch.arange(B * H, device=dev)[:, None, None] * nk + idx).reshape(-1)  # [rows*k] table column
    row = torch.arange(nq, device=dev)[None, :, None].expand(B * H, nq, k).reshape(-1)
    order = torch.argsort(col * nq + row)
    bwd_idx = row[order].to(torch.int32)
    counts = torch.zeros(B * H * nk, dtype=torch.int64, device=dev).scatter_add_(0, col, torch.ones_like(col))
    bwd_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
    seqs = None
    if scores.dim() == 4:
        from sparseflash.layout import seq_row

        seqs = tuple(seq_row(0, seq_len, 0, seq_len, 0, 0, b * H * nq, b * H * nk, block_size)
                     for b in range(B))
    return sf.BlockLayout(seq_len=seq_len, kv_len=seq_len, block_size=block_size, causal=False,
                          num_heads=H, table_heads=H, fwd_ptr=fwd_ptr, fwd_idx=fwd_idx,
                          fwd_nfull=torch.zeros(rows, dtype=torch.int32, device=dev),
                          bwd_ptr=bwd_ptr, bwd_idx=bwd_idx, seqs=seqs,
                          bwd_nfull=torch.zeros(B * H * nk, dtype=torch.int32, device=dev))


def _block_scores(q, k, block_size):
    """Mean-pooled q k^T per block pair, ``[H, nq, nk]`` (batch 0)."""
    B, H, N, d = q.shape
    qb = q[0].reshape(H, N // block_size, block_size, d).mean(2)
    kb = k[0].reshape(H, N // block_size, block_size, d).mean(2)
    return qb @ kb.transpose(-1, -2)


def _scores_topk_attention(q, k, v, backend="torch"):
    scores = _block_scores(q.detach(), k.detach(), 16)
    layout = _topk_layout_by_hand(scores, 2, seq_len=q.shape[2], block_size=16)
    return sparse_attention(q, k, v, layout, backend=backend)


def test_tensor_tables_match_the_host_layout_of_the_same_blocks():
    q, k, v, do = _qkv(H=2, N=80, requires_grad=True)
    layout = _topk_layout_by_hand(_block_scores(q.detach(), k.detach(), 16), 2, seq_len=80, block_size=16)
    assert layout.tables_on_device
    assert layout.to(torch.device("cpu")).fwd_idx is layout.fwd_idx               # wrapped, not copied
    host = sf.compile(sf.from_mask(_dense_of(layout)), 80, block_size=16, num_heads=2)
    out = sparse_attention(q, k, v, layout, backend="torch")
    ref = sparse_attention(q, k, v, host, backend="torch")
    torch.testing.assert_close(out, ref)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), do), torch.autograd.grad(ref, (q, k, v), do)):
        torch.testing.assert_close(a, b)


def _dense_of(layout) -> np.ndarray:
    """[H, nq, nk] bool mask of a tensor-table layout (test helper: reads the tables)."""
    ptr, idx = layout.fwd_ptr.cpu().numpy(), layout.fwd_idx.cpu().numpy()
    H, nq, nk = layout.shape
    dense = np.zeros((H * nq, nk), bool)
    for r in range(H * nq):
        dense[r, idx[ptr[r]:ptr[r + 1]]] = True
    return dense.reshape(H, nq, nk)


def test_scores_topk_attention_is_one_graph():
    """scores -> top-k layout -> sparse_attention under fullgraph=True: one graph, the tables
    are graph tensors passed to attention_tables_fwd, and values and gradients match eager."""
    backend = _CountingBackend()
    q, k, v, do = _qkv(H=2, N=80, requires_grad=True)
    compiled = torch.compile(_scores_topk_attention, fullgraph=True, backend=backend)
    out = compiled(q, k, v)
    ref = _scores_topk_attention(q, k, v)
    torch.testing.assert_close(out, ref)
    assert len(backend.graphs) == 1
    assert _ops_in(backend.graphs[0]) == ["sparseflash.attention_tables_fwd.default"]
    assert not any(n.op == "get_attr" for n in backend.graphs[0].graph.nodes)     # no constant tables
    for a, b in zip(torch.autograd.grad(out, (q, k, v), do), torch.autograd.grad(ref, (q, k, v), do)):
        torch.testing.assert_close(a, b)


def test_per_batch_tensor_tables_are_one_graph():
    """One table set per batch element (num_seqs = batch): each element attends through its
    own top-k blocks, under fullgraph=True as in eager."""
    def f(q, k, v):
        scores = torch.stack([_block_scores(q[b:b + 1].detach(), k[b:b + 1].detach(), 16)
                              for b in range(q.shape[0])])                          # [B, H, nq, nk]
        layout = _topk_layout_by_hand(scores, 2, seq_len=q.shape[2], block_size=16)
        return sparse_attention(q, k, v, layout, backend="torch")

    backend = _CountingBackend()
    q, k, v, do = _qkv(B=2, H=2, N=64, requires_grad=True)
    out = torch.compile(f, fullgraph=True, backend=backend)(q, k, v)
    per_element = torch.cat([_scores_topk_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1]) for b in range(2)])
    torch.testing.assert_close(out, per_element)
    torch.testing.assert_close(f(q, k, v), per_element)
    assert len(backend.graphs) == 1
    for a, b in zip(torch.autograd.grad(out, (q, k, v), do), torch.autograd.grad(per_element, (q, k, v), do)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kernels", [False, True], ids=["torch-chain", "build-kernels"])
def test_sf_topk_layout_is_one_graph(monkeypatch, kernels):
    """Both build paths trace into the attention's graph: the torch chain as its ops, the
    Triton build kernels as one op (on CPU they run under the interpreter)."""
    if not hasattr(sf, "topk_layout"):
        pytest.skip("sf.topk_layout is not in this branch yet (branch dynamic)")
    from sparseflash import dynamic

    if kernels and not HAS_CUDA and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the build kernels on CPU need TRITON_INTERPRET=1")
    monkeypatch.setattr(dynamic, "_BUILD_KERNELS", kernels)
    backend = _CountingBackend()

    def f(q, k, v):
        scores = _block_scores(q, k, 16)[None]                               # [1, H, nq, nk]
        layout = sf.topk_layout(scores, 2, seq_len=q.shape[2], block_size=16, causal=True,
                                include=_INCLUDE)
        return sparse_attention(q, k, v, layout, backend="torch")

    # the kernels compiled on a GPU, else interpreted on CPU tensors
    q, k, v, _ = _qkv(H=2, N=80, device="cuda" if kernels and HAS_CUDA else "cpu")
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend=backend)(q, k, v), f(q, k, v))
    assert len(backend.graphs) == 1
    build = ["sparseflash.build_tables.default"] if kernels else []
    assert _ops_in(backend.graphs[0]) == build + ["sparseflash.attention_tables_fwd.default"]


_INCLUDE = sf.local(0) | sf.global_blocks(1)


def test_key_padding_over_graph_built_tables_is_one_graph():
    """A key-padding mask with tables built in the graph: the op makes every block partial
    (the tables' full blocks were judged without the mask), so the Triton kernels mask the
    padding inside blocks the tables call full; values and gradients equal eager's."""
    backend_name = "triton" if HAS_CUDA or os.environ.get("TRITON_INTERPRET") == "1" else "torch"
    dev = "cuda" if HAS_CUDA else "cpu"

    def f(q, k, v, kpm):
        scores = _block_scores(q.detach(), k.detach(), 16)[None]            # [1, H, nq, nk]
        layout = sf.topk_layout(scores, 3, seq_len=q.shape[2], block_size=16, causal=True, include=_INCLUDE)
        return sparse_attention(q, k, v, layout, backend=backend_name, key_padding_mask=kpm)

    backend = _CountingBackend()
    q, k, v, do = _qkv(H=2, N=80, requires_grad=True, device=dev)
    kpm = torch.ones(1, 80, dtype=torch.bool, device=dev)
    kpm[0, 5:12] = False                           # inside block 0: a full block of later rows
    scores = _block_scores(q.detach(), k.detach(), 16)[None]
    assert int(sf.topk_layout(scores, 3, seq_len=80, block_size=16, causal=True,
                              include=_INCLUDE).fwd_nfull.sum()) > 0
    out = torch.compile(f, fullgraph=True, backend=backend)(q, k, v, kpm)
    ref = f(q, k, v, kpm)
    torch.testing.assert_close(out, ref)
    assert len(backend.graphs) == 1
    assert _ops_in(backend.graphs[0])[-1] == "sparseflash.attention_tables_fwd.default"
    unpadded = f(q, k, v, None)
    assert (out - unpadded).abs().max() > 1e-3     # the mask did something
    for a, b in zip(torch.autograd.grad(out, (q, k, v), do), torch.autograd.grad(ref, (q, k, v), do)):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU: checks that the build kernels and "
                                         "the attention run with no host sync, compiled")
def test_gpu_sf_topk_layout_attention_has_no_host_sync():
    q, k, v, do = _qkv(H=4, N=1024, d=64, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def f(q, k, v):
        scores = _block_scores(q.detach(), k.detach(), 16)[None].float()   # [1, H, nq, nk]
        layout = sf.topk_layout(scores, 4, seq_len=q.shape[2], block_size=16, causal=True,
                                include=_INCLUDE)
        return sparse_attention(q, k, v, layout, backend="triton")

    compiled = torch.compile(f, fullgraph=True)
    out = compiled(q, k, v)                                 # compile (host work) outside the check
    torch.autograd.grad(out, (q, k, v), do)
    ref = f(q, k, v)                                        # eager: constants cached, kernels built
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = compiled(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), do)
        sf.topk_layout(_block_scores(q.detach(), k.detach(), 16)[None].float(), 4, seq_len=q.shape[2],
                       block_size=16, causal=True, include=_INCLUDE)      # eager build
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    for a, b in zip(grads, torch.autograd.grad(ref, (q, k, v), do)):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=5e-2)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU: checks that no host sync happens "
                                         "inside the compiled top-k attention")
def test_gpu_scores_topk_attention_has_no_host_sync():
    q, k, v, do = _qkv(H=4, N=1024, d=64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    compiled = torch.compile(lambda q, k, v: _scores_topk_attention(q, k, v, backend="triton"),
                             fullgraph=True)
    out = compiled(q, k, v)                                 # compile (host work) outside the check
    torch.autograd.grad(out, (q, k, v), do)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = compiled(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), do)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref = _scores_topk_attention(q, k, v, backend="triton")
    torch.testing.assert_close(out.float(), ref.float(), atol=2e-2, rtol=2e-2)
    for a, b in zip(grads, torch.autograd.grad(ref, (q, k, v), do)):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=5e-2)


# ---------------------------------------------------------------------- other processes
def _run(script: str, env: dict = None, timeout: int = 240) -> dict:
    """Run a script in a fresh interpreter (this checkout first on the path); it prints one
    JSON line last."""
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_MODEL = """
import json, sys, torch, numpy as np
import sparseflash as sf

class Model(torch.nn.Module):
    def __init__(self, pattern):
        super().__init__()
        self.pattern = pattern

    def forward(self, q, k, v):
        return sf.sparse_attention(q * 2.0, k, v, self.pattern, block_size=16, causal=True,
                                   backend="torch") + 1.0

def inputs():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 2, 64, 16, generator=g) for _ in range(3))

PATTERNS = {
    "pattern": sf.local(1) | sf.global_blocks(1),
    "layout": sf.compile(sf.local(1) | sf.global_blocks(1), 64, block_size=16, causal=True, num_heads=2),
}
"""


@pytest.mark.parametrize("kind", ["pattern", "layout"])
def test_export_program_loads_and_runs_in_a_new_process(kind, tmp_path):
    path = str(tmp_path / "program.pt2")
    saved = _run(_MODEL + f"""
model = Model(PATTERNS[{kind!r}])
ep = torch.export.export(model, inputs())
torch.export.save(ep, {path!r})
print(json.dumps({{"out": model(*inputs()).flatten().tolist()}}))
""")
    loaded = _run(_MODEL + f"""
ep = torch.export.load({path!r})
print(json.dumps({{"out": ep.module()(*inputs()).flatten().tolist()}}))
""")
    np.testing.assert_allclose(loaded["out"], saved["out"], rtol=1e-6, atol=1e-6)


def test_fx_graph_cache_hits_across_processes(tmp_path):
    """Two fresh processes compile the same model with inductor and one shared cache
    directory: the second one's graph comes from the FX graph cache."""
    script = _MODEL + """
from torch._dynamo.utils import counters
model = torch.compile(Model(sf.local(1) | sf.global_blocks(1)))
with torch.no_grad():
    out = model(*inputs())
print(json.dumps({"hit": counters["inductor"]["fxgraph_cache_hit"],
                  "miss": counters["inductor"]["fxgraph_cache_miss"], "out": out.flatten().tolist()}))
"""
    env = {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "TORCHINDUCTOR_FX_GRAPH_CACHE": "1"}
    first, second = _run(script, env), _run(script, env)
    assert first["miss"] > 0 and first["hit"] == 0
    assert second["hit"] > 0 and second["miss"] == 0
    np.testing.assert_allclose(second["out"], first["out"], rtol=1e-6, atol=1e-6)
