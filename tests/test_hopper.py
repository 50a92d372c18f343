"""The Hopper (sm_90) forward kernel (sparseflash/kernels/hopper.py, Gluon).

Gluon has no interpreter, so on the CPU the kernel is compiled to sm_90 machine code (Triton
ships ptxas) and its PTX is checked for the instructions the design rests on; the numerical
tests run compiled on a Hopper GPU only, against the float64 oracle (tests/test_real_batches
``check``, forward and gradients; the backward is the portable kernel's).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash.kernels import launch

from test_real_batches import check

IS_HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
gpu = pytest.mark.skipif(not IS_HOPPER, reason="needs a Hopper GPU (sm_90): Gluon has no interpreter")


_COMPILE = r"""
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from sparseflash.kernels import hopper, launch

which, d, dtype, flags = json.loads(sys.argv[1])
gdt = gl.bfloat16 if dtype == "bf16" else gl.float16
common = dict(BLOCK=128, BLOCK_N=128, HEAD_DIM=d, CAUSAL=False, HAS_WL=False, HAS_WR=False,
              HAS_KPM=False, PER_SEQ=False, PACKED=False, SCHEDULED=False)
if which == "fwd":
    kernel = hopper._hopper_fwd_kernel
    constexprs = dict(common, BLOCK_M=128, NUM_STAGES=launch._HOPPER_STAGES[d], REVERSE_M=False,
                      CONSUMER_REGS=232, PRODUCER_REGS=40)
    rows = {"q_desc": 64, "k_desc": 128, "v_desc": 128}
else:
    kernel = hopper._hopper_dkdv_kernel
    constexprs = dict(common, BLOCK_M=64, GROUP_SIZE=1, NUM_STAGES=launch._HOPPER_BWD_STAGES[d],
                      CONSUMER_REGS=232, PRODUCER_REGS=24)
    rows = {"q_desc": 64, "k_desc": 64, "v_desc": 64, "do_desc": 64}
constexprs.update(flags)


def desc(r):
    layout = gl.NVMMASharedLayout.get_default_for([1, 1, r, d], gdt)
    return f"tensordesc<{dtype}[1,1,{r},{d}],{layout!r}>"


pointers = {"Out": f"*{dtype}", "DK": f"*{dtype}", "DV": f"*{dtype}", "LSE": "*fp32",
            "LSE2": "*fp32", "Delta": "*fp32", "KPM": "*i8", "qk_scale": "fp32", "sm_scale": "fp32"}
tables = ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull", "seqs", "schedule")
signature = {}
for name in kernel.arg_names:
    if name in constexprs:
        signature[name] = "constexpr"
    elif name in rows:
        signature[name] = desc(rows[name])
    elif name in pointers:
        signature[name] = pointers[name]
    elif name in tables:
        signature[name] = "*i32"
    else:
        signature[name] = "i32"
compiled = triton.compile(GluonASTSource(kernel, signature, constexprs),
                          target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
sys.stdout.write(compiled.asm["ptx"])
"""


def _ptx(which, d, dtype, flags):
    """The kernel's sm_90 PTX, compiled in a fresh process: under TRITON_INTERPRET=1 (CI)
    Gluon's decorator yields an interpreted function that cannot be compiled."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, "-c", _COMPILE, json.dumps([which, d, dtype, flags])],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


@pytest.mark.parametrize("d,dtype,flags", [
    (128, "bf16", {}),
    (64, "fp16", dict(CAUSAL=True, HAS_WL=True, HAS_KPM=True, PER_SEQ=True, PACKED=True,
                      SCHEDULED=True)),
], ids=["d128-bf16-plain", "d64-fp16-every-mask"])
def test_kernel_compiles_to_hopper_instructions(d, dtype, flags):
    """The sm_90 build uses what the design rests on: asynchronous wgmma, TMA copies into the
    ring, register reallocation between the warp-specialised partitions, and no spills."""
    ptx = _ptx("fwd", d, dtype, flags)
    assert re.search(r"wgmma\.mma_async", ptx), "no warpgroup MMA"
    assert re.search(r"cp\.async\.bulk\.tensor", ptx), "no TMA copies"
    assert re.search(r"setmaxnreg", ptx), "no warp specialisation"
    assert not re.search(r"\b(ld|st)\.local", ptx), "register spills"


@pytest.mark.parametrize("d,dtype,flags", [
    (128, "bf16", {}),
    (64, "fp16", dict(GROUP_SIZE=4, CAUSAL=True, HAS_WR=True, HAS_KPM=True, PER_SEQ=True,
                      PACKED=True, SCHEDULED=True)),
], ids=["d128-bf16-plain", "d64-fp16-gqa-every-mask"])
def test_dkdv_kernel_compiles_to_hopper_instructions(d, dtype, flags):
    ptx = _ptx("dkdv", d, dtype, flags)
    assert len(re.findall(r"wgmma\.mma_async", ptx)) >= 4 * 4, "four products per step"
    assert re.search(r"cp\.async\.bulk\.tensor", ptx), "no TMA copies"
    assert re.search(r"setmaxnreg", ptx), "no warp specialisation"


def test_dispatcher_says_why_it_falls_back():
    layout = sf.compile(sf.local(1), 256, block_size=128)
    q = torch.zeros(1, 1, 256, 64)
    reason = launch._hopper_applies(q, q, q, layout, scale=0.125, config=None, softcap=0.0,
                                    alibi=None, dropout_p=0.0)
    assert reason == "not a CUDA tensor"


# ------------------------------------------------------------------ on a Hopper GPU
@pytest.fixture
def hopper_only(monkeypatch):
    """Every forward and every dK/dV in the test runs the Hopper kernels, or raises saying why
    they cannot."""
    monkeypatch.setattr(launch, "USE_HOPPER", True)
    monkeypatch.setattr(launch, "USE_HOPPER_BWD", True)


CASES = [
    # (name, pattern, kwargs for check)
    ("local-global-causal-1000", sf.local(2) | sf.global_blocks(1), dict(q_lens=[1000], causal=True)),
    ("bigbird-d64", sf.bigbird(window=1, globals=1, random=2), dict(q_lens=[1300], d=64)),
    ("dense-kv-longer", sf.dense(), dict(q_lens=[300], k_lens=[1000], causal=True)),
    ("window", sf.dense(), dict(q_lens=[1100], window=(200, 0), causal=True)),
    ("gqa", sf.local(1), dict(q_lens=[700], H=4, Hkv=2, causal=True)),
    ("packed-one-token-docs", sf.local(1) | sf.global_blocks(1),
     dict(q_lens=[1, 300, 1, 520], packed=True, causal=True)),
    ("batch-2", sf.butterfly(), dict(q_lens=[900], B=2)),
]


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name,pattern,kw", CASES, ids=[c[0] for c in CASES])
def test_hopper_forward_matches_the_oracle(name, pattern, kw, dtype, hopper_only):
    kw = dict(kw)
    kw.setdefault("d", 128)
    check(pattern, bs=128, dtype=dtype, backend="triton", **kw)


@gpu
def test_hopper_key_padding_crosses_a_block_and_empties_a_row(hopper_only):
    N = 600
    kpm = torch.ones(2, N, dtype=torch.bool, device="cuda")
    kpm[0, 100:450] = False               # crosses the 128- and 256-token block edges
    kpm[1, :] = False                     # batch element 1 sees nothing: out 0, lse -inf
    check(sf.local(1) | sf.global_blocks(1), B=2, q_lens=[N], d=128, bs=128,
          dtype=torch.bfloat16, kpm=kpm)


@gpu
def test_hopper_reads_transposed_views_in_place(hopper_only):
    B, N, H, d = 1, 640, 2, 128
    g = torch.Generator(device="cuda").manual_seed(0)
    x = [torch.randn(B, N, H, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3)]
    q, k, v = (t.transpose(1, 2) for t in x)          # strides (N*H*d, d, H*d, 1)
    out = sf.sparse_attention(q, k, v, sf.local(1), block_size=128, causal=True)
    ref = sf.sparse_attention(q.contiguous(), k.contiguous(), v.contiguous(), sf.local(1),
                              block_size=128, causal=True, backend="torch")
    assert (out.float() - ref.float()).abs().max().item() < 2e-2


@gpu
def test_hopper_runs_device_built_per_batch_tables(hopper_only):
    B, H, N, d, bs = 2, 2, 1024, 128, 128
    n = N // bs
    g = torch.Generator(device="cuda").manual_seed(1)
    scores = torch.randn(B, H, n, n, device="cuda", generator=g)
    layout = sf.topk_layout(scores, 3, seq_len=N, block_size=bs, causal=True,
                            include=sf.local(0))
    q, k, v = (torch.randn(B, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    out = sf.sparse_attention(q, k, v, layout)
    ref = sf.sparse_attention(q, k, v, layout, backend="torch")
    assert not torch.isnan(out).any()
    assert (out.float() - ref.float()).abs().max().item() < 2e-2


@gpu
def test_portable_fallbacks_still_run_under_auto():
    """With the default dispatch, calls the Hopper kernel does not cover (dropout, d=80,
    block 64) run the portable kernel instead of failing."""
    q = torch.randn(1, 2, 512, 80, device="cuda", dtype=torch.bfloat16)
    out = sf.sparse_attention(q, q, q, sf.local(1), block_size=64, causal=True)
    assert out.shape == q.shape and not torch.isnan(out).any()
    q = torch.randn(1, 2, 512, 128, device="cuda", dtype=torch.bfloat16)
    out = sf.sparse_attention(q, q, q, sf.local(1), block_size=128, dropout_p=0.1)
    assert not torch.isnan(out).any()
