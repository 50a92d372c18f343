"""The Hopper (sm_90) forward kernel (sparseflash/kernels/hopper.py, Gluon).

Gluon has no interpreter, so on the CPU the kernel is compiled to sm_90 machine code (Triton
ships ptxas) and its PTX is checked for the instructions the design rests on; the numerical
tests run compiled on a Hopper GPU only, against the float64 oracle (tests/test_real_batches
``check``, forward and gradients; the backward is the portable dQ kernel and the Hopper dK/dV
kernel). Softcap and ALiBi (both formulation variants of each) are checked against the oracle
too, with the portable kernels' error on the same inputs as the yardstick.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

import sparseflash as sf
from sparseflash.kernels import launch

from test_parity import positions
from test_real_batches import check

IS_HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not IS_HOPPER, reason="needs a Hopper GPU (sm_90): Gluon has no interpreter")


_COMPILE = r"""
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from sparseflash.kernels import hopper, launch

which, d, dtype, flags = json.loads(sys.argv[1])
gdt = gl.bfloat16 if dtype == "bf16" else gl.float16
common = dict(BLOCK=128, BLOCK_N=128, HEAD_DIM=d, CAUSAL=False, HAS_WL=False, HAS_WR=False,
              HAS_KPM=False, PER_SEQ=False, PACKED=False, SCHEDULED=False, HAS_SOFTCAP=0,
              HAS_ALIBI=0, HAS_DROPOUT=0, RELEASE=bool(launch.HOPPER_RELEASE_ALL))
if which == "fwd":
    kernel = hopper._hopper_fwd_kernel
    constexprs = dict(common, BLOCK_M=128, NUM_STAGES=launch._HOPPER_STAGES[d], REVERSE_M=False,
                      CONSUMER_REGS=launch._HOPPER_FWD_REGS[2][0],
                      PRODUCER_REGS=launch._HOPPER_FWD_REGS[2][1], PERSISTENT=False, OVERLAP_PV=False,
                      NUM_CONSUMERS=2, DYNAMIC=False, RESCALE=0.0, WALK=0,
                      OUT_TMA=launch._out_tma(flags.get("NUM_CONSUMERS", 2)),
                      KV_SPLIT=False, Q_BUFS=1)
    if flags.get("NUM_CONSUMERS") == 3:
        constexprs.update(BLOCK_M=192, CONSUMER_REGS=launch._HOPPER_FWD_REGS[3][0],
                          PRODUCER_REGS=launch._HOPPER_FWD_REGS[3][1])
    rows = {"q_desc": 64, "k_desc": 128, "v_desc": 128, "o_desc": 64}
else:
    kernel = hopper._hopper_dkdv_kernel
    constexprs = dict(common, BLOCK_M=64, GROUP_SIZE=1, NUM_STAGES=launch._HOPPER_BWD_STAGES[d],
                      CONSUMER_REGS=232, PRODUCER_REGS=24, STATS_TMA=1,
                      FUSED_DQ=False, DQ_ROWS=False,
                      KV_REGS=0, OUT_TMA=launch.HOPPER_BWD_OUT_TMA is True)
    rows = {"q_desc": 64, "k_desc": 64, "v_desc": 64, "do_desc": 64, "lse2_desc": 64,
            "delta_desc": 64, "dq_desc": 64, "dk_desc": 64, "dv_desc": 64}
constexprs.update(flags)
if which != "fwd" and "ROWS_LATE" not in flags:
    # the launch's bits for these options (the split loops go with the softcap alone)
    constexprs["ROWS_LATE"] = launch._bwd_rows_late(d, constexprs)
if which != "fwd":                                    # a step's rows (launch.HOPPER_BWD_STEP_M)
    rows.update({name: constexprs["BLOCK_M"] for name in ("q_desc", "do_desc", "lse2_desc",
                                                          "delta_desc", "dq_desc")})
    if constexprs["DQ_ROWS"]:                         # a warpgroup's dQ tile: half the step's rows
        rows["dq_desc"] = constexprs["BLOCK_M"] // 2


def desc(r, name):
    if name == "dq_desc":                             # the fused dQ's fp32 accumulator
        layout = gl.NVMMASharedLayout.get_default_for([1, 1, r, 32], gl.float32)
        return f"tensordesc<fp32[1,1,{r},32],{layout!r}>"
    if name in ("lse2_desc", "delta_desc"):           # flat fp32 statistics
        layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=1)
        return f"tensordesc<fp32[{r}],{layout!r}>"
    layout = gl.NVMMASharedLayout.get_default_for([1, 1, r, d], gdt)
    return f"tensordesc<{dtype}[1,1,{r},{d}],{layout!r}>"


pointers = {"Out": f"*{dtype}", "DK": f"*{dtype}", "DV": f"*{dtype}", "LSE": "*fp32",
            "LSE2": "*fp32", "Delta": "*fp32", "KPM": "*i8", "ALIBI": "*fp32", "qk_scale": "fp32",
            "sm_scale": "fp32", "softcap2": "fp32", "seed": "i64", "drop_scale": "fp32"}
tables = ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull", "seqs", "schedule",
          "tile_counter")
signature = {}
for name in kernel.arg_names:
    if name in constexprs:
        signature[name] = "constexpr"
    elif name in rows:
        signature[name] = desc(rows[name], name)
    elif name in pointers:
        signature[name] = pointers[name]
    elif name in tables:
        signature[name] = "*i32"
    else:
        signature[name] = "i32"
compiled = triton.compile(GluonASTSource(kernel, signature, constexprs),
                          target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
if len(sys.argv) > 2 and sys.argv[2] in ("sass", "raw"):
    # instead of the PTX: the sm_90 SASS's counts of wgmma issues and of waits on them ("raw":
    # the SASS itself, for benchmarks/results/cpu-sass/step_path.py)
    import subprocess
    import tempfile
    from triton import knobs
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        sass = subprocess.run([knobs.nvidia.nvdisasm.path, "-c", f.name], capture_output=True,
                              text=True, check=True).stdout
    if sys.argv[2] == "raw":
        sys.stdout.write(sass)
        sys.exit(0)
    # exponentials issued between a wait for the older of two product groups (DEPBAR.LE 1:
    # S_t done, P_{t-1} V_{t-1} may run) and the next wait for all (DEPBAR.LE 0): the most
    # over the kernel's code, i.e. how many of a step's exponentials overlap its P V
    overlap = 0
    for part in sass.split("WARPGROUP.DEPBAR.LE gsb0, 0x1")[1:]:
        overlap = max(overlap, part.split("WARPGROUP.DEPBAR.LE gsb0, 0x0")[0].count("MUFU.EX2"))
    # the instructions and the label positions; every loop (a branch back to an earlier label)
    # and the loops holding wgmma and exponentials (benchmarks/sass_loops.py). The step loop is
    # the smallest, one consumer's loop over its K/V steps; every consumer's step loop (a
    # warp-specialised kernel has one per consumer partition) is an innermost one, whose
    # local-memory accesses are counted
    from benchmarks import sass_loops
    body, labels = sass_loops.instructions(sass)
    back_edges = sass_loops.back_edges(body, labels)
    loops = sass_loops.step_loops(body, labels)
    smallest = min(loops, key=lambda loop: loop[1] - loop[0], default=None)
    step = body[smallest[0]:smallest[1] + 1] if smallest else None
    step_text = "\n".join(step or [])
    step_loops_local = [len(re.findall(r"\s(LDL|STL)", "\n".join(body[a:b + 1])))
                        for a, b in sass_loops.innermost(loops)]
    # products skipped by a branch: in-place FMULs (FMUL Rn, Rn, ...) right after a predicated
    # branch, i.e. the conditional rescale's groups of the output accumulator
    branched, run = 0, False
    for line in step or []:
        if re.search(r"@!?P\d BRA", line):
            run = True
            continue
        m = re.search(r"\sFMUL (R\d+), (R\d+),", line)
        if run and m and m.group(1) == m.group(2):
            branched += 1
        else:
            run = False
    # register A operands that a loop's wgmma reads as they came into the loop (no write before
    # it in the loop: loop-invariant, K and V with KV_REGS) and that the loop then overwrites,
    # so the next trip reads something else: (wgmma, writer) pairs, over every loop
    def written(line):
        # the registers an instruction writes: its first operand (the second after a predicate
        # output), as wide as the instruction's suffixes say
        m = re.match(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s+([^;]*);", line)
        if not m:
            return range(0)
        op, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
        if args and re.fullmatch(r"!?U?P(\d|T)", args[0]):
            args = args[1:]
        r = re.fullmatch(r"R(\d+)", args[0]) if args else None
        if not r:
            return range(0)
        width = 1
        if op.startswith("HGMMA"):
            width = int(re.search(r"\.64x(\d+)x", op).group(1)) // 2
        elif re.search(r"\.M88\.(\d)", op):
            width = int(re.search(r"\.M88\.(\d)", op).group(1))
        elif ".128" in op:
            width = 4
        elif ".64" in op or ".WIDE" in op:
            width = 2
        return range(int(r.group(1)), int(r.group(1)) + width)

    clobbered = []
    for a, b in back_edges:
        loop = body[a:b + 1]
        if any("EXIT" in x for x in loop):
            continue                                  # a wait's retry block returning to its place
        writes = [set(written(x)) for x in loop]
        for j, x in enumerate(loop):
            rs = re.search(r"HGMMA\.\S+ R\d+, R(\d+),", x)
            if not rs:
                continue
            regs = set(range(int(rs.group(1)), int(rs.group(1)) + 4))
            if any(regs & w for w in writes[:j]):
                continue                              # made in the loop before it is read
            clobbered += [(x.strip(), y.strip()) for y, w in zip(loop[j + 1:], writes[j + 1:])
                          if regs & w]
    sys.stdout.write(json.dumps({"HGMMA": sass.count("HGMMA"), "DEPBAR": sass.count("WARPGROUP.DEPBAR"),
                                 "RS_CLOBBERED": clobbered,
                                 "HGMMA_RS": len(re.findall(r"HGMMA\.\S+ R\d+, R\d+,", sass)),
                                 "STL": sass.count("STL"), "STS": sass.count("STS"),
                                 "IMAD.HI": len(re.findall(r"IMAD\.(HI|WIDE)", sass)),
                                 "EX2_OVERLAPPING_PV": overlap,
                                 "STEP_LOOP": len(step or []), "STEP_I2F": step_text.count("I2F"),
                                 "STEP_IMAD_HI": step_text.count("IMAD.HI.U32"),
                                 "STEP_IMAD_WIDE": step_text.count("IMAD.WIDE.U32"),
                                 # a step's Philox products issued before its first wait for a product
                                 "STEP_IMAD_WIDE_BEFORE_WAIT": step_text.split("WARPGROUP.DEPBAR")[0].count(
                                     "IMAD.WIDE.U32"),
                                 "STEP_SEL": len(re.findall(r"\sSEL\s", step_text)),
                                 "STEP_VOTE": step_text.count("VOTE.ANY"),
                                 "STEP_MOV": len(re.findall(r"\sMOV\s", step_text)),
                                 "STEP_BRANCHED_FMUL": branched,
                                 "STEP_STS": step_text.count(" STS"), "STEP_LDS": step_text.count(" LDS"),
                                 "STEP_SHFL": step_text.count("SHFL"), "STEP_STL": step_text.count("STL"),
                                 "STEP_BAR": step_text.count("BAR.SYNC"),
                                 "STEP_EX2": step_text.count("MUFU.EX2"),
                                 "STEP_TANH": step_text.count("MUFU.TANH"),
                                 "STEP_F2FP_RELU": step_text.count("F2FP.RELU"),
                                 "STEP_FMNMX": step_text.count("FMNMX"),
                                 "STEP_LOOPS_LOCAL": step_loops_local,
                                 "SHARED": compiled.metadata.shared}))
else:
    sys.stdout.write(compiled.asm["ptx"])
"""


def compiled_in_fresh_process(script: str, *args: str) -> str:
    """What ``script`` (a compile script, given ``args``) prints, run in a fresh process with the
    interpreter off: under TRITON_INTERPRET=1 (CI) Gluon's decorator yields an interpreted
    function that cannot be compiled."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _ptx(which, d, dtype, flags):
    """The kernel's sm_90 PTX, compiled in a fresh process."""
    import json

    return compiled_in_fresh_process(_COMPILE, json.dumps([which, d, dtype, flags]))


def _sass_counts(which, d, dtype, flags):
    """Counts in the kernel's sm_90 SASS (``HGMMA``, ``DEPBAR``: wgmma waits, ``STL``: spill
    stores), compiled in a fresh process."""
    import json

    return json.loads(compiled_in_fresh_process(_COMPILE, json.dumps([which, d, dtype, flags]), "sass"))


@pytest.mark.parametrize("d,dtype,flags", [
    (128, "bf16", {}),
    (64, "fp16", dict(CAUSAL=True, HAS_WL=True, HAS_KPM=True, PER_SEQ=True, PACKED=True,
                      SCHEDULED=True)),
    (128, "bf16", dict(CAUSAL=True, SCHEDULED=True, PERSISTENT=True)),
    (64, "bf16", dict(NUM_CONSUMERS=3, CAUSAL=True, SCHEDULED=True)),
    (64, "fp16", dict(NUM_CONSUMERS=3, PERSISTENT=True, HAS_DROPOUT=16110)),
    (128, "bf16", dict(CAUSAL=True, SCHEDULED=True, PERSISTENT=True, DYNAMIC=True)),
    (64, "bf16", dict(NUM_CONSUMERS=3, PERSISTENT=True, DYNAMIC=True, CAUSAL=True)),
    # the d=64 softcap forward on three consumers (HOPPER_FWD_CONSUMERS=3; not the default:
    # slower in run27, benchmarks/results/h200-hopper/run27-three-softcap)
    (64, "fp16", dict(NUM_CONSUMERS=3, PERSISTENT=True, DYNAMIC=True, CAUSAL=True, SCHEDULED=True,
                      HAS_SOFTCAP=2)),
], ids=["d128-bf16-plain", "d64-fp16-every-mask", "d128-persistent", "d64-three-consumers-causal",
        "d64-three-consumers-persistent-dropout", "d128-persistent-dynamic",
        "d64-three-consumers-dynamic", "d64-three-consumers-softcap"])
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
                      PACKED=True, SCHEDULED=True, STATS_TMA=2)),
    (128, "bf16", dict(CAUSAL=True, STATS_TMA=0)),
], ids=["d128-bf16-plain", "d64-fp16-gqa-every-mask-stats-cpasync", "d128-causal-stats-loaded"])
def test_dkdv_kernel_compiles_to_hopper_instructions(d, dtype, flags):
    ptx = _ptx("dkdv", d, dtype, flags)
    assert len(re.findall(r"wgmma\.mma_async", ptx)) >= 4 * 4, "four products per step"
    assert re.search(r"cp\.async\.bulk\.tensor", ptx), "no TMA copies"
    assert re.search(r"setmaxnreg", ptx), "no warp specialisation"


@pytest.mark.parametrize("d,dtype,flags", [
    (128, "bf16", {}),
    (64, "fp16", dict(GROUP_SIZE=4, CAUSAL=True, HAS_WR=True, HAS_KPM=True, PER_SEQ=True,
                      PACKED=True, SCHEDULED=True, STATS_TMA=2)),
    (128, "bf16", dict(CAUSAL=True, HAS_DROPOUT=16110, HAS_SOFTCAP=2, CONSUMER_REGS=240)),
    (64, "bf16", dict(BLOCK_M=128, CAUSAL=True, HAS_DROPOUT=16110, HAS_SOFTCAP=2)),
    (64, "fp16", dict(BLOCK_M=128, GROUP_SIZE=4, CAUSAL=True, HAS_WR=True, HAS_KPM=True,
                      PER_SEQ=True, PACKED=True, SCHEDULED=True, STATS_TMA=2)),
    (64, "bf16", dict(BLOCK_M=128, DQ_ROWS=True, CAUSAL=True)),
], ids=["d128-bf16-plain", "d64-fp16-gqa-every-mask-stats-cpasync", "d128-causal-dropout-softcap",
        "d64-128-query-steps-dropout-softcap", "d64-128-query-steps-gqa-every-mask-stats-cpasync",
        "d64-128-query-steps-dq-by-rows"])
def test_fused_dq_compiles_into_the_dkdv_kernel(d, dtype, flags):
    """With FUSED_DQ (``launch.HOPPER_FUSED_DQ``) the dK/dV kernel runs a fifth product a step
    (dS K, half of dQ's columns per warpgroup, or with DQ_ROWS half of the step's rows) and
    adds it to the accumulator with the copy engine's reduce (``cp.reduce.async.bulk.tensor``, issued by the writer warp); its products
    stay asynchronous, and at the ring depth the launch picks it fits the 227 KB of shared
    memory an SM gives a CTA."""
    step_m = flags.get("BLOCK_M", 64)
    stages = launch._fused_stages(d, dict(HAS_DROPOUT=flags.get("HAS_DROPOUT", 0)), step_m)
    fused = dict(flags, FUSED_DQ=True, NUM_STAGES=stages)
    plain_ptx = _ptx("dkdv", d, dtype, dict(flags, NUM_STAGES=stages) if step_m == 128 else flags)
    ptx = _ptx("dkdv", d, dtype, fused)
    assert not re.search(r"cp\.reduce\.async\.bulk", plain_ptx)
    assert re.search(r"cp\.reduce\.async\.bulk\.tensor\S*\.add\b", ptx), "no copy-engine add"
    # dS K over 128 keys: 8 more wgmma instructions (K = 16 each) per 64 rows of the step, in
    # each consumer partition (per warpgroup, with the rows split between them: DQ_ROWS)
    wgmmas = [len(re.findall(r"wgmma\.mma_async", text)) for text in (plain_ptx, ptx)]
    per_rows = 64 * (2 if flags.get("DQ_ROWS") else 1)
    assert wgmmas[1] - wgmmas[0] >= 2 * 128 // 16 * step_m // per_rows, wgmmas
    counts = _sass_counts("dkdv", d, dtype, fused)
    assert counts["DEPBAR"] * 4 <= counts["HGMMA"], f"wgmma serialised: {counts}"
    assert counts["SHARED"] <= 232448, counts
    # 128-query steps (launch.HOPPER_BWD_STEP_M) keep the 64-query form's registers: no spills
    # in the step loops (the every-mask GQA form stores one word outside them)
    if step_m == 128:
        assert counts["STL"] <= 1 and not any(counts["STEP_LOOPS_LOCAL"]), counts


@pytest.mark.parametrize("B,H,N,d,pad,dtype", [
    (1, 2, 100, 64, 128, torch.float16),
    (2, 3, 4200, 80, 64, torch.bfloat16),
    (1, 1, 1, 128, 128, torch.bfloat16),
], ids=["fp16-short", "bf16-d80-several-programs", "bf16-one-token"])
def test_fused_dq_conversion_kernel(B, H, N, d, pad, dtype):
    """The fused dQ's conversion (bwd.py ``_dq_convert_kernel``) writes ``scale * acc`` past
    the accumulator's padding rows, in dQ's dtype: as torch rounds it (fp16 bitwise; bf16
    bitwise on a GPU, within one unit in the last place under the interpreter, whose bf16 cast
    truncates), lengths that are no multiple of a program's block, padding rows (NaN here)
    never read."""
    g = torch.Generator(device=DEVICE).manual_seed(B * 1000 + N)
    acc = torch.randn(B, H, pad + N, d, generator=g, device=DEVICE) * 50
    acc[:, :, :pad] = float("nan")
    dq = torch.full((B, H, N, d), float("inf"), dtype=dtype, device=DEVICE)
    launch._dq_convert_launch(B * H, N, d, pad, 0.37, False)(dq.device.index, acc, dq)
    ref = (acc[:, :, pad:] * 0.37).to(dtype)
    assert torch.isfinite(dq).all()
    if dtype == torch.float16 or DEVICE == "cuda":
        assert torch.equal(dq, ref)
    else:
        ulp = ref.float().abs() * 2.0 ** -7
        assert ((dq.float() - ref.float()).abs() <= ulp).all()
        assert not torch.equal(dq, torch.zeros_like(dq))


def test_fused_dq_dispatch(monkeypatch):
    """The fused dQ runs wherever the Hopper dK/dV kernel does, except in a split backward
    (context parallelism's ``dkdv_first``, where dQ must be complete after the first part);
    forced on there it says why it cannot. Its ring depth at d=128 is 2 (3 with dropout would
    not fit)."""
    monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", None)
    assert launch._use_fused_dq(split=False) is True
    assert launch._use_fused_dq(split=True) is False
    monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", False)
    assert launch._use_fused_dq(split=False) is False
    monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", True)
    assert launch._use_fused_dq(split=False) is True
    with pytest.raises(RuntimeError, match="HOPPER_FUSED_DQ.*split"):
        launch._use_fused_dq(split=True)
    monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", 1)
    with pytest.raises(ValueError, match="HOPPER_FUSED_DQ must be None, True or False"):
        launch._use_fused_dq(split=False)
    # forced on where the portable backward runs (head dim 32; on the CPU, interpreted), the
    # backward says so
    monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", True)
    q = torch.randn(1, 1, 64, 32, device=DEVICE, requires_grad=True)
    out = sf.sparse_attention(q, q, q, sf.dense(), block_size=32, backend="triton")
    with pytest.raises(RuntimeError, match="HOPPER_FUSED_DQ=True but the Hopper dK/dV kernel does not run"):
        out.sum().backward()
    assert launch._fused_stages(128, dict(HAS_DROPOUT=16110)) == 2
    assert launch._fused_stages(64, dict(HAS_DROPOUT=0)) == launch._HOPPER_FUSED_STAGES[64]


def test_dkdv_step_and_dq_split_rules(monkeypatch):
    """``launch.HOPPER_BWD_STEP_M`` and ``HOPPER_BWD_DQ_ROWS``: by default 128-query steps at
    d=64 with the fused dQ (not with dropout and ALiBi together, whose loop spills), 64 at
    d=128 and without the fused dQ; with 128-query steps each warpgroup's dQ product takes half
    the rows (unless switched off); other values are refused, naming the switch."""
    plain, drop_alibi = dict(HAS_DROPOUT=0, HAS_ALIBI=0), dict(HAS_DROPOUT=16110, HAS_ALIBI=2)
    assert launch._bwd_step_m(64, True, plain) == 128
    assert launch._bwd_step_m(64, True, dict(HAS_DROPOUT=16110, HAS_ALIBI=0)) == 128
    assert launch._bwd_step_m(64, True, drop_alibi) == 64
    assert launch._bwd_step_m(64, False, plain) == 64
    assert launch._bwd_step_m(128, True, plain) == 64
    assert launch._bwd_dq_rows(128) is True and launch._bwd_dq_rows(64) is False
    monkeypatch.setattr(launch, "HOPPER_BWD_DQ_ROWS", False)
    assert launch._bwd_dq_rows(128) is False
    monkeypatch.setattr(launch, "HOPPER_BWD_STEP_M", 64)
    assert launch._bwd_step_m(64, True, plain) == 64
    monkeypatch.setattr(launch, "HOPPER_BWD_STEP_M", 128)
    assert launch._bwd_step_m(128, True, plain) == 64           # d=128's ring would not fit
    monkeypatch.setattr(launch, "HOPPER_BWD_STEP_M", 96)
    with pytest.raises(ValueError, match="HOPPER_BWD_STEP_M must be None, 64 or 128"):
        launch._bwd_step_m(64, True, plain)
    monkeypatch.setattr(launch, "HOPPER_BWD_DQ_ROWS", 1)
    with pytest.raises(ValueError, match="HOPPER_BWD_DQ_ROWS must be None, True or False"):
        launch._bwd_dq_rows(128)


def test_dkdv_kv_registers_rule(monkeypatch):
    """``launch.HOPPER_BWD_KV_REGS``: by default K and V are register operands of the fused
    kernel at d=64 (any GQA group) without dropout or the unfolded causal ALiBi, and not
    passed through the step's waits (KV_REGS 2); never at d=128 nor, by default, in the
    unfused kernel. True forces them at d=64, through the waits in the unfused kernel (1, the
    form that ptxas does not miscompile there); False keeps them in shared memory; other values
    are refused, naming the switch."""
    plain = dict(HAS_DROPOUT=0, HAS_ALIBI=0)
    assert launch._bwd_kv_regs(64, plain, True) == 2
    assert launch._bwd_kv_regs(64, dict(HAS_DROPOUT=0, HAS_ALIBI=1), True) == 2
    assert launch._bwd_kv_regs(64, dict(HAS_DROPOUT=0, HAS_ALIBI=2), True) == 2     # folded rows
    monkeypatch.setattr(launch, "HOPPER_BWD_ALIBI_FOLD", False)
    assert launch._bwd_kv_regs(64, dict(HAS_DROPOUT=0, HAS_ALIBI=2), True) == 0
    assert launch._bwd_kv_regs(64, dict(HAS_DROPOUT=0, HAS_ALIBI=1), True) == 2
    monkeypatch.setattr(launch, "HOPPER_BWD_ALIBI_FOLD", True)
    assert launch._bwd_kv_regs(64, dict(HAS_DROPOUT=16110, HAS_ALIBI=0), True) == 0
    assert launch._bwd_kv_regs(64, plain, False) == 0
    assert launch._bwd_kv_regs(128, plain, True) == 0
    monkeypatch.setattr(launch, "HOPPER_BWD_KV_REGS", True)
    assert launch._bwd_kv_regs(64, dict(HAS_DROPOUT=16110, HAS_ALIBI=2), True) == 2
    assert launch._bwd_kv_regs(64, plain, False) == 1
    assert launch._bwd_kv_regs(128, plain, True) == 0
    monkeypatch.setattr(launch, "HOPPER_BWD_KV_REGS", False)
    assert launch._bwd_kv_regs(64, plain, True) == 0
    monkeypatch.setattr(launch, "HOPPER_BWD_KV_REGS", "yes")
    with pytest.raises(ValueError, match="HOPPER_BWD_KV_REGS must be None, True or False"):
        launch._bwd_kv_regs(64, plain, True)


@pytest.mark.parametrize("dlse", [False, True], ids=["no-dlse", "dlse"])
def test_dq_kernel_statistics_alone_equal_the_full_kernels(dlse, monkeypatch):
    """The fused Hopper backward runs the portable dQ kernel's prologue alone (``STATS_ONLY``:
    delta and lse2, no dQ). Interpreted on the CPU (compiled on a GPU, head dim 32) under the portable dK/dV kernel, which reads them:
    its dK and dV must equal those of the full dQ kernel's statistics bit for bit (packed
    documents with a one-token one, causal, GQA; with a gradient of the returned LSE, which
    folds into delta)."""
    from sparseflash.kernels import launch

    cu = torch.tensor([0, 1, 121, 200], dtype=torch.int32, device=DEVICE)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 200, 32, generator=g).to(DEVICE).requires_grad_(True)
    k, v = (torch.randn(1, 2, 200, 32, generator=g).to(DEVICE).requires_grad_(True) for _ in range(2))
    do = torch.randn(1, 4, 200, 32, generator=g).to(DEVICE)
    dl = torch.randn(1, 4, 200, generator=g).to(DEVICE)

    def grads():
        out, lse = sf.sparse_attention(q, k, v, sf.local(1) | sf.global_blocks(1), block_size=32,
                                       causal=True, cu_seqlens=cu, backend="triton",
                                       return_lse=True)
        loss = (out * do).sum() + ((lse.nan_to_num(neginf=0.0) * dl).sum() if dlse else 0.0)
        return torch.autograd.grad(loss, (q, k, v))

    full = grads()
    init = launch._BwdPlan.__init__

    def stats_only(plan):
        init(plan)
        plan.fused_dq = True         # as the Hopper branch sets it: the dQ launch gets STATS_ONLY

    monkeypatch.setattr(launch._BwdPlan, "__init__", stats_only)
    monkeypatch.setattr(launch, "CACHE_PLANS", False)
    alone = grads()
    assert torch.equal(alone[1], full[1]) and torch.equal(alone[2], full[2])
    # no dQ written (packed documents allocate it zeroed): the kernel stopped after the statistics
    assert torch.count_nonzero(alone[0]) == 0 and torch.count_nonzero(full[0]) > 0


@pytest.mark.parametrize("n,nk", [(300, 1000), (200, 200)], ids=["kv-longer", "square"])
def test_dq_statistics_fold_the_causal_alibi_row_term(n, nk, monkeypatch):
    """With the causal ALiBi's column form (HAS_ALIBI 2) the Hopper dK/dV kernel's scores leave
    out the bias's row term ``alibi2 * (t - R)``, R a step's first query position (a multiple
    of 64), and so must the lse2 it reads: the dQ kernel's statistics pass stores ``lse * log2(e)
    + slope * log2(e) * (t & 63)`` there (``FOLD_ROWS``). Interpreted on the CPU (forced: on the
    CPU the portable dK/dV kernel reads lse2 unfolded); t is the query's position in the
    keys' frame (query i at ``i + nk - n``), so kv-longer's offset of 700 (60 mod 64) tells the
    positions from the row indices. (With the portable dK/dV kernel reading the folded rows its
    gradients are wrong: only the stored statistics are checked here. The GPU oracle tests check
    the Hopper kernels' gradients.)"""
    from sparseflash.kernels import launch

    g = torch.Generator().manual_seed(1)
    H = 2
    q = torch.randn(1, H, n, 32, generator=g).to(DEVICE).requires_grad_(True)
    k, v = (torch.randn(1, H, nk, 32, generator=g).to(DEVICE).requires_grad_(True) for _ in range(2))
    slopes = torch.tensor([0.5, 0.0625], device=DEVICE)
    init = launch._BwdPlan.__init__

    def stats_only(plan):
        init(plan)
        plan.fused_dq = True

    kept = {}
    workspace = launch._bwd_workspace

    def keep(*args, **kw):
        got = workspace(*args, **kw)
        kept["lse2"] = got[1]
        return got

    monkeypatch.setattr(launch._BwdPlan, "__init__", stats_only)
    monkeypatch.setattr(launch, "CACHE_PLANS", False)
    monkeypatch.setattr(launch, "_fold_alibi_rows", lambda hopper, constexprs: constexprs["HAS_ALIBI"] == 2)
    monkeypatch.setattr(launch, "_bwd_workspace", keep)
    out, lse = sf.sparse_attention(q, k, v, sf.dense(), block_size=64, causal=True,
                                   alibi_slopes=slopes, backend="triton", return_lse=True)
    out.sum().backward()
    import math

    LOG2E = math.log2(math.e)
    t = torch.arange(n, device=DEVICE) + (nk - n)
    plain = lse.detach().double() * LOG2E                                     # (1, H, n)
    want = plain + slopes.double()[:, None] * LOG2E * (t & 63).double()
    got = kept["lse2"].double()                                               # (1, H, n)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-5), (got - want).abs().max()
    # the fold is what differs from the plain statistics (the test can fail)
    assert (want - plain).abs().max() > 1.0


def test_causal_alibi_costs_the_dkdv_step_about_one_add_per_score(monkeypatch):
    """The causal ALiBi's column form in the Hopper dK/dV kernel: the column term is a [64] vector
    a step (two values a thread), added to the score in the scale's FMA, then one add a score
    for lse2 (32 a thread in a d=128 step). With ``launch.HOPPER_BWD_ALIBI_FOLD`` (ROWS_LATE bit
    8) the row term is in the stored lse2 (the dQ kernel's FOLD_ROWS), so a step converts no
    query positions; without it a step converts 16 a thread, with an add and an FMA each, and
    spills (sm_90 SASS, d=128 bf16 causal fused dQ, a full step 543 / 550 instructions against
    465 / 445 folded and 416 / 399 without ALiBi)."""
    assert launch.HOPPER_BWD_ALIBI_FOLD is True
    assert launch._bwd_rows_late(128, dict(HAS_ALIBI=2)) & 8
    monkeypatch.setattr(launch, "HOPPER_BWD_ALIBI_FOLD", False)
    assert launch._bwd_rows_late(128, dict(HAS_ALIBI=2)) & 8 == 0
    assert not launch._fold_alibi_rows(True, dict(HAS_ALIBI=2))
    monkeypatch.setattr(launch, "HOPPER_BWD_ALIBI_FOLD", True)
    assert launch._bwd_rows_late(64, dict(HAS_ALIBI=2)) & 8
    assert not launch._bwd_rows_late(128, dict(HAS_ALIBI=1)) & 8
    assert not launch._bwd_rows_late(128, {}) & 8
    assert launch._fold_alibi_rows(True, dict(HAS_ALIBI=2)) and not launch._fold_alibi_rows(False, dict(HAS_ALIBI=2))
    fused = dict(FUSED_DQ=True, NUM_STAGES=2, CAUSAL=True, ROWS_LATE=1)
    plain = _sass_counts("dkdv", 128, "bf16", fused)
    added = _sass_counts("dkdv", 128, "bf16", dict(fused, HAS_ALIBI=2))
    folded = _sass_counts("dkdv", 128, "bf16", dict(fused, HAS_ALIBI=2, ROWS_LATE=9))
    assert min(plain["STEP_LOOP"], added["STEP_LOOP"], folded["STEP_LOOP"]) > 0, "no step loop found"
    assert added["STEP_I2F"] >= 16, f"{added['STEP_I2F']} int-to-float conversions a step"
    assert folded["STEP_I2F"] <= 4, f"{folded['STEP_I2F']} int-to-float conversions a step"
    assert folded["STEP_STL"] == 0, "spill stores in the step loop"
    assert folded["STEP_LOOP"] <= plain["STEP_LOOP"] + 64, (folded["STEP_LOOP"], plain["STEP_LOOP"])
    assert folded["STEP_LOOP"] < added["STEP_LOOP"], (folded["STEP_LOOP"], added["STEP_LOOP"])


@pytest.mark.parametrize("which,d,dtype,flags", [
    ("fwd", 128, "bf16", dict(HAS_SOFTCAP=2)),
    ("fwd", 128, "bf16", dict(HAS_SOFTCAP=2, HAS_ALIBI=2, CAUSAL=True, HAS_KPM=True)),
    ("fwd", 64, "fp16", dict(HAS_SOFTCAP=1, HAS_ALIBI=1, HAS_WL=True, PER_SEQ=True, PACKED=True,
                             SCHEDULED=True)),
    ("fwd", 128, "bf16", dict(HAS_ALIBI=2, CAUSAL=True)),
    ("dkdv", 128, "bf16", dict(HAS_SOFTCAP=2, HAS_ALIBI=2, CAUSAL=True)),
    ("dkdv", 64, "fp16", dict(HAS_SOFTCAP=1, HAS_ALIBI=1, GROUP_SIZE=2, HAS_KPM=True)),
    ("dkdv", 128, "bf16", dict(HAS_ALIBI=1)),
], ids=["fwd-d128-softcap-folded", "fwd-d128-softcap-alibi-column-causal",
        "fwd-d64-fp16-softcap-plain-alibi-abs-masks", "fwd-d128-alibi-column",
        "dkdv-d128-softcap-folded-alibi-column", "dkdv-d64-fp16-softcap-plain-alibi-abs-gqa",
        "dkdv-d128-alibi-abs"])
def test_softcap_and_alibi_variants_compile_to_hopper_instructions(which, d, dtype, flags):
    """The softcap / ALiBi forms (tiles.py ``_log2_scores``: HAS_SOFTCAP 1 plain, 2 folded;
    HAS_ALIBI 1 |t - u|, 2 causal column term) keep the design's instructions, and softcap is
    one ``tanh.approx.f32`` per score (none without softcap)."""
    ptx = _ptx(which, d, dtype, flags)
    products = 4 * 4 if which == "dkdv" else 1
    assert len(re.findall(r"wgmma\.mma_async", ptx)) >= products, "no warpgroup MMA"
    assert re.search(r"cp\.async\.bulk\.tensor", ptx), "no TMA copies"
    assert re.search(r"setmaxnreg", ptx), "no warp specialisation"
    tanh = len(re.findall(r"tanh\.approx\.f32", ptx))
    if flags.get("HAS_SOFTCAP"):
        # per consumer warpgroup and trip: [64, 128] (forward) or [64, 64] (dK/dV) scores over
        # 128 threads, in each of the two consumer partitions (the forward's first trip apart)
        per_tile = 64 * 128 // 128 if which == "fwd" else 64 * 64 // 128
        assert tanh >= 2 * per_tile, f"{tanh} tanh.approx for a softcap kernel"
    else:
        assert tanh == 0
    if which == "fwd":
        assert not re.search(r"\b(ld|st)\.local", ptx), "register spills"



def test_causal_alibi_costs_the_forward_one_add_per_score():
    """The causal ALiBi's column term (``_fwd_scores``): a vector made once before the loop and a
    scalar per step, so a consumer's step loop converts no key positions to float (it did 32 a
    thread per step before run14: conversion, multiply and add per column) and grows by about
    one add per score (64 a thread) over the loop without ALiBi (sm_90 SASS: 903 against 854
    instructions; the form before took 989)."""
    flags = dict(CAUSAL=True, OVERLAP_PV=True)
    plain = _sass_counts("fwd", 128, "bf16", flags)
    alibi = _sass_counts("fwd", 128, "bf16", dict(flags, HAS_ALIBI=2))
    assert plain["STEP_LOOP"] > 0 and alibi["STEP_LOOP"] > 0, "no step loop found"
    assert alibi["STEP_I2F"] <= 2, f"{alibi['STEP_I2F']} int-to-float conversions a step"
    assert alibi["STEP_LOOP"] <= plain["STEP_LOOP"] + 72, (alibi["STEP_LOOP"], plain["STEP_LOOP"])
    assert alibi["STL"] == 0, "register spills"


def test_abs_alibi_in_raw_units_costs_the_forward_two_instructions_a_score(monkeypatch):
    """The abs ALiBi form (non-causal calls) in the Hopper forward in raw-score units
    (``launch.HOPPER_FWD_ALIBI_RAW``, kernels/hopper.py HAS_ALIBI 3): ``q.k - (slope / scale)
    |t - u|``, a subtract and an FMA a score for any sign of the slope, then the plain row max
    and exp2. Taken only with the switch, without softcap, in base 2 and with a scale > 0. sm_90
    SASS, d=128: a full step 767 -> 653 instructions (plain 491), the key positions no longer
    converted a step (32 a thread)."""
    mods = dict(HAS_ALIBI=1, HAS_SOFTCAP=0, NATURAL=False)
    assert launch.HOPPER_FWD_ALIBI_RAW is False
    monkeypatch.setattr(launch, "HOPPER_FWD_ALIBI_SIDES", False)
    assert launch._hopper_fwd_alibi(mods, 0.1) == 1
    monkeypatch.setattr(launch, "HOPPER_FWD_ALIBI_RAW", True)
    assert launch._hopper_fwd_alibi(mods, 0.1) == 3
    assert launch._hopper_fwd_alibi(mods, 0.0) == 1                      # the division
    assert launch._hopper_fwd_alibi(dict(mods, HAS_SOFTCAP=2), 0.1) == 1
    assert launch._hopper_fwd_alibi(dict(mods, NATURAL=True), 0.1) == 1
    assert launch._hopper_fwd_alibi(dict(mods, HAS_ALIBI=2), 0.1) == 2
    plain = _sass_counts("fwd", 128, "bf16", {})
    abs_ = _sass_counts("fwd", 128, "bf16", dict(HAS_ALIBI=1))
    raw = _sass_counts("fwd", 128, "bf16", dict(HAS_ALIBI=3))
    assert min(plain["STEP_LOOP"], abs_["STEP_LOOP"], raw["STEP_LOOP"]) > 0, "no step loop found"
    assert abs_["STEP_I2F"] >= 32, f"{abs_['STEP_I2F']} int-to-float conversions a step"
    assert raw["STEP_I2F"] <= 16, f"{raw['STEP_I2F']} int-to-float conversions a step"
    assert raw["STEP_LOOP"] <= plain["STEP_LOOP"] + 2 * 64 + 48, (raw["STEP_LOOP"], plain["STEP_LOOP"])
    assert raw["STEP_LOOP"] <= abs_["STEP_LOOP"] - 64, (raw["STEP_LOOP"], abs_["STEP_LOOP"])
    assert raw["STL"] == 0, "register spills"


def _step_blocks(which, d, flags):
    """The basic blocks of the first step loop of the kernel's sm_90 SASS, each as a Counter of
    its opcodes (a block ends at a label or after a branch)."""
    import collections
    import json

    from benchmarks import sass_loops

    sass = compiled_in_fresh_process(_COMPILE, json.dumps([which, d, "bf16", flags]), "raw")
    body, labels = sass_loops.instructions(sass)
    a, b = sass_loops.innermost(sass_loops.step_loops(body, labels, through_exit=False))[0]
    starts = set(labels.values())
    blocks, cur = [], collections.Counter()
    for i in range(a, b + 1):
        if i in starts and cur:
            blocks.append(cur)
            cur = collections.Counter()
        m = re.match(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", body[i])
        cur[m.group(1) if m else "?"] += 1
        if "BRA" in body[i]:
            blocks.append(cur)
            cur = collections.Counter()
    return blocks + ([cur] if cur else [])


def test_abs_alibi_split_by_sides_takes_the_column_forms_fma(monkeypatch):
    """The abs ALiBi form (non-causal calls) in the Hopper forward split by the sides of the
    diagonal (``launch.HOPPER_FWD_ALIBI_SIDES``, kernels/hopper.py HAS_ALIBI 4): a step whose
    keys all lie before (after) its queries adds ``+acol`` (``-acol``) in the scale's FMA, as
    the causal column form does, and a [ROWS] shift in the row max; a step across the diagonal
    takes the abs form. The default (on an H100 the non-causal forward's ALiBi overhead went
    1.217 -> 1.130 at dense 16K d=128), without softcap. sm_90 SASS, d=128: two
    blocks of 64 FMAs (one a score) and nothing else a score, the positions converted a step
    only in the diagonal's block (the abs form converts 32 a step in all), no spill."""
    mods = dict(HAS_ALIBI=1, HAS_SOFTCAP=0, NATURAL=False)
    assert launch.HOPPER_FWD_ALIBI_SIDES is True
    assert launch._hopper_fwd_alibi(mods, 0.1) == 4
    monkeypatch.setattr(launch, "HOPPER_FWD_ALIBI_SIDES", False)
    assert launch._hopper_fwd_alibi(mods, 0.1) == 1
    monkeypatch.setattr(launch, "HOPPER_FWD_ALIBI_SIDES", True)
    assert launch._hopper_fwd_alibi(mods, -0.1) == 4                   # no division
    monkeypatch.setattr(launch, "HOPPER_FWD_ALIBI_RAW", True)
    assert launch._hopper_fwd_alibi(mods, 0.1) == 4                    # before the raw form
    assert launch._hopper_fwd_alibi(dict(mods, HAS_SOFTCAP=2), 0.1) == 1
    assert launch._hopper_fwd_alibi(dict(mods, HAS_ALIBI=2), 0.1) == 2
    sides = _sass_counts("fwd", 128, "bf16", dict(HAS_ALIBI=4))
    abs_ = _sass_counts("fwd", 128, "bf16", dict(HAS_ALIBI=1))
    assert sides["STEP_LOOP"] > 0 and abs_["STEP_LOOP"] > 0, "no step loop found"
    assert abs_["STEP_I2F"] >= 32 and sides["STEP_I2F"] <= 4, (abs_["STEP_I2F"], sides["STEP_I2F"])
    assert sides["STL"] == 0, "register spills"
    fma_blocks = [blk for blk in _step_blocks("fwd", 128, dict(HAS_ALIBI=4))
                  if blk["FFMA"] == 64 and sum(blk.values()) <= 64 + 3]
    assert len(fma_blocks) == 2, _step_blocks("fwd", 128, dict(HAS_ALIBI=4))


@pytest.mark.parametrize("which,d,dtype,flags", [
    ("fwd", 128, "bf16", dict(HAS_DROPOUT=16110)),
    ("fwd", 64, "fp16", dict(HAS_DROPOUT=8107, CAUSAL=True, PER_SEQ=True, PACKED=True)),
    ("dkdv", 128, "bf16", dict(HAS_DROPOUT=16110, CAUSAL=True, CONSUMER_REGS=240)),
    ("dkdv", 64, "fp16", dict(HAS_DROPOUT=8110, GROUP_SIZE=2, HAS_KPM=True)),
], ids=["fwd-d128-16bit", "fwd-d64-8bit-7rounds-packed", "dkdv-d128-16bit-causal",
        "dkdv-d64-8bit-gqa"])
def test_dropout_compiles_into_both_hopper_kernels(which, d, dtype, flags):
    """Dropout (the "mma" mapping, 16- and 8-bit draws) in the Gluon kernels: the Philox
    multiplies are there (two 32x32 products a round, in each of the two consumer partitions),
    the wgmma stay asynchronous, and in the forward the draws reach the accumulator layout
    without a shared-memory round trip (as many STS as without dropout) and without spills."""
    plain = {k: v for k, v in flags.items() if k != "HAS_DROPOUT"}
    base = _sass_counts(which, d, dtype, plain)
    got = _sass_counts(which, d, dtype, flags)
    rounds = flags["HAS_DROPOUT"] % 100
    assert got["IMAD.HI"] - base["IMAD.HI"] >= 2 * 2 * rounds, (base, got)
    assert got["DEPBAR"] * 4 <= got["HGMMA"], got
    if which == "fwd":
        assert got["STS"] == base["STS"], (base, got)
        assert got["STL"] == 0, got


@pytest.mark.parametrize("which,code", [("fwd", 16110), ("fwd", 8110), ("dkdv", 16110)],
                         ids=["fwd-16bit", "fwd-8bit", "dkdv-16bit"])
def test_dropout_forms_compile_to_fewer_instructions(which, code):
    """``launch.HOPPER_DROPOUT_FORM`` (kernels/hopper.py ``_dropout_words``): bit 0 makes each
    Philox product one IMAD.WIDE.U32 instead of IMAD.HI.U32 + IMAD; bit 1 zeroes the forward's
    dropped probabilities before the 16-bit conversion (no integer SEL on split halves). In the
    sm_90 SASS of a consumer's step loop (d=128, bf16) form 3 has no IMAD.HI.U32 and, in the
    forward, no integer SEL; form 0 has both. Forward with 16-bit draws: 1153 against 1392
    instructions a step when written (696 without dropout)."""
    fused = dict(FUSED_DQ=True, NUM_STAGES=2) if which == "dkdv" else {}
    form0 = _sass_counts(which, 128, "bf16", dict(fused, HAS_DROPOUT=code))
    form3 = _sass_counts(which, 128, "bf16", dict(fused, HAS_DROPOUT=code + 300000))
    assert form0["STEP_LOOP"] > 0 and form3["STEP_LOOP"] > 0, "no step loop found"
    assert form0["STEP_IMAD_HI"] >= 16 and form3["STEP_IMAD_HI"] == 0, (form0, form3)
    assert form3["STEP_IMAD_WIDE"] >= 16, form3
    if which == "fwd":
        assert form0["STEP_SEL"] >= 32 and form3["STEP_SEL"] == 0, (form0, form3)
        assert form3["STEP_LOOP"] <= form0["STEP_LOOP"] - 150, (form0, form3)
        assert form3["STL"] == 0, form3
    else:
        assert form3["STEP_LOOP"] < form0["STEP_LOOP"], (form0, form3)


def test_dkdv_early_draws_run_before_the_wait_for_the_scores():
    """``HOPPER_DROPOUT_FORM`` bit 2: the dK/dV kernel's Philox rounds (16-bit quad draws) are
    issued after a step's first products and before its wait for S^T, where form 3 issues none
    of them (ptxas moves them past the wait unless a branch holds them there). sm_90 SASS, d=128,
    bf16, causal, fused dQ, a consumer's step loop; when written: 44 of 45 IMAD.WIDE before the
    wait against 0 of 44; 994 instructions against 943, 5 spill stores in the loop against 0, local
    accesses a step loop 81/21/25 against 62/5/9."""
    fused = dict(FUSED_DQ=True, NUM_STAGES=2, CAUSAL=True)
    late = _sass_counts("dkdv", 128, "bf16", dict(fused, HAS_DROPOUT=316207))
    early = _sass_counts("dkdv", 128, "bf16", dict(fused, HAS_DROPOUT=716207))
    assert late["STEP_LOOP"] > 0 and early["STEP_LOOP"] > 0, "no step loop found"
    assert late["STEP_IMAD_WIDE_BEFORE_WAIT"] <= 2, late
    # 4 calls a thread, 2 products a round, 7 rounds (products of counters fixed along a key
    # tile's steps are hoisted out of the loop): all but at most 2 of the loop's before the wait
    assert early["STEP_IMAD_WIDE_BEFORE_WAIT"] >= max(40, early["STEP_IMAD_WIDE"] - 2), early
    # the words held across the wait cost the loop a few spill stores (5 when written, none at form 3)
    assert early["STEP_STL"] <= 8, early
    # the 8-bit quad draws ignore bit 2
    assert _sass_counts("dkdv", 128, "bf16", dict(fused, HAS_DROPOUT=708207))["STEP_IMAD_WIDE_BEFORE_WAIT"] <= 2


def test_dropout_ds_select_takes_fewer_instructions():
    """``HOPPER_DROPOUT_FORM`` bit 4 (the default since stop 61): the dK/dV kernel's dS^T as
    ``P^T where(P^T > 0, dP^T scale - delta, delta)``, an FMA, a compare, a select and a multiply
    a score, where form 3's ``|P^T| (where(P^T > 0, dP^T scale, 0) - delta)`` takes a multiply,
    a compare, a select, an add and a multiply. sm_90 SASS, bf16, causal, fused dQ, a
    consumer's step loop; when written, d=128: 972 -> 929 instructions (a full step 794 -> 747),
    d=64: 864 -> 817, with no more spill stores in the loop than form 3 plus 2."""
    fused = dict(FUSED_DQ=True, NUM_STAGES=2, CAUSAL=True)
    for d in (128, 64):
        form3 = _sass_counts("dkdv", d, "bf16", dict(fused, HAS_DROPOUT=316207))
        form19 = _sass_counts("dkdv", d, "bf16", dict(fused, HAS_DROPOUT=1916207))
        assert form3["STEP_LOOP"] > 0 and form19["STEP_LOOP"] > 0, "no step loop found"
        assert form19["STEP_LOOP"] <= form3["STEP_LOOP"] - 30, (d, form3, form19)
        assert form19["STEP_STL"] <= form3["STEP_STL"] + 2, (d, form3, form19)


def test_dropout_relu_conversion_takes_fewer_instructions():
    """``HOPPER_DROPOUT_FORM`` bit 5 (stop 63): the dK/dV kernel's dV operand max(P^T, 0)
    converted to 16 bits by ``cvt.rn.relu`` (F2FP.RELU, one a pair of scores) instead of a max a
    score (FMNMX) and the conversion, with dS^T's select written in PTX (as a ``gl.where`` beside
    the relu conversion, LLVM packed the compares into bit masks: 38 instructions a step more).
    sm_90 SASS, bf16, causal, fused dQ, a consumer's step loop; when written, d=128: 892 -> 860
    instructions, d=64: 822 -> 788, FMNMX 64 -> 32 and 16 F2FP.RELU in both."""
    fused = dict(FUSED_DQ=True, NUM_STAGES=2, CAUSAL=True)
    for d in (128, 64):
        form19 = _sass_counts("dkdv", d, "bf16", dict(fused, HAS_DROPOUT=1916207))
        form51 = _sass_counts("dkdv", d, "bf16", dict(fused, HAS_DROPOUT=5116207))
        assert form19["STEP_LOOP"] > 0 and form51["STEP_LOOP"] > 0, "no step loop found"
        assert form19["STEP_F2FP_RELU"] == 0 and form51["STEP_F2FP_RELU"] >= 8, (d, form19, form51)
        assert form51["STEP_FMNMX"] <= form19["STEP_FMNMX"] - 2 * form51["STEP_F2FP_RELU"], (d, form19, form51)
        assert form51["STEP_LOOP"] <= form19["STEP_LOOP"] - 10, (d, form19, form51)
        assert form51["STEP_STL"] <= form19["STEP_STL"] + 2, (d, form19, form51)


def test_unclamped_experiment_drops_the_clamp_only(monkeypatch):
    """``launch._HOPPER_BWD_UNCLAMPED`` (an experiment, off by default) sets the dK/dV kernel's
    ROWS_LATE bit 4, which drops the exponent's clamp: one FMNMX a score (32 a thread in a d=128
    step of 64 keys and 64 queries a warpgroup) and no exponential. sm_90 SASS, bf16, causal,
    fused dQ; when written, d=128: 416 -> 381 instructions a step loop."""
    assert launch._HOPPER_BWD_UNCLAMPED is False and launch._bwd_rows_late(128) & 4 == 0
    monkeypatch.setattr(launch, "_HOPPER_BWD_UNCLAMPED", True)
    assert launch._bwd_rows_late(128) & 4 and launch._bwd_rows_late(64) & 4
    fused = dict(FUSED_DQ=True, NUM_STAGES=2, CAUSAL=True)
    clamped = _sass_counts("dkdv", 128, "bf16", dict(fused, ROWS_LATE=1))
    unclamped = _sass_counts("dkdv", 128, "bf16", dict(fused, ROWS_LATE=5))
    assert clamped["STEP_LOOP"] > 0 and unclamped["STEP_LOOP"] > 0, "no step loop found"
    assert unclamped["STEP_FMNMX"] == clamped["STEP_FMNMX"] - 32, (clamped, unclamped)
    assert unclamped["STEP_EX2"] == clamped["STEP_EX2"], (clamped, unclamped)
    assert unclamped["STEP_LOOP"] <= clamped["STEP_LOOP"] - 25, (clamped, unclamped)


@pytest.mark.parametrize("which,flags,base,best", [
    ("fwd", dict(PERSISTENT=True, DYNAMIC=1, Q_BUFS=2, KV_SPLIT=True, OUT_TMA=True, OVERLAP_PV=True,
                 RESCALE=8.0, NUM_STAGES=2), 3, 1),
    ("dkdv", dict(FUSED_DQ=True, NUM_STAGES=2, CAUSAL=True), 7, 5),
], ids=["fwd-run30", "dkdv-fused-causal"])
def test_release_by_every_thread_drops_the_warpgroup_barriers(which, flags, base, best):
    """``launch.HOPPER_RELEASE_ALL`` (kernels/hopper.py ``_release``): with one thread's
    ``mbarrier.arrive``, which Triton 3.6's shared-memory barrier analysis takes for a write of
    all shared memory, a consumer's step loop syncs its warpgroup (``BAR.SYNC``) before each
    release; with every thread's ``cp.async.mbarrier.arrive.noinc`` (and the forward's K and V
    barriers in allocations of their own) those go. sm_90 SASS, d=128, bf16, the forward's
    default pipeline and the fused dK/dV kernel (causal): 3 and 1, 7 and 5 when written."""
    one = _sass_counts(which, 128, "bf16", dict(flags, RELEASE=False))
    every = _sass_counts(which, 128, "bf16", dict(flags, RELEASE=True))
    assert one["STEP_LOOP"] > 0 and every["STEP_LOOP"] > 0, "no step loop found"
    assert one["STEP_BAR"] == base and every["STEP_BAR"] <= best, (one["STEP_BAR"], every["STEP_BAR"])
    assert every["STL"] <= one["STL"], (one["STL"], every["STL"])


def test_quad_dropout_draws_stay_in_registers():
    """The "quad" mapping (sparseflash.philox) in the Gluon kernels: the fused dK/dV kernel draws
    each call in the thread that holds its 8 scores, so its step loop stores to shared memory
    only what it stores without dropout (the "mma" mapping's mask crosses shared memory there)
    and is shorter than with the "mma" mapping; the forward trades half its words between lane
    pairs (shuffles, no shared memory, no spills). sm_90 SASS, d=128, bf16, a consumer's step
    loop; when written: dK/dV 996 instructions against 1154 ("mma"; 576 without dropout),
    forward 1241 against 1153 (696)."""
    fused = dict(FUSED_DQ=True, NUM_STAGES=2)
    base = _sass_counts("dkdv", 128, "bf16", fused)
    mma = _sass_counts("dkdv", 128, "bf16", dict(fused, HAS_DROPOUT=316110))
    quad = _sass_counts("dkdv", 128, "bf16", dict(fused, HAS_DROPOUT=316210))
    assert min(base["STEP_LOOP"], mma["STEP_LOOP"], quad["STEP_LOOP"]) > 0, "no step loop found"
    assert quad["STEP_STS"] == base["STEP_STS"] < mma["STEP_STS"], (base, mma, quad)
    assert quad["STEP_LDS"] == base["STEP_LDS"] < mma["STEP_LDS"], (base, mma, quad)
    assert quad["STEP_LOOP"] <= mma["STEP_LOOP"] - 100, (mma, quad)
    # 4 calls a thread, 2 products a round (the first round's products of counters that stay
    # fixed along a key tile's steps are hoisted out of the loop)
    assert quad["STEP_IMAD_WIDE"] >= 4 * 2 * 8, quad
    fwd_base = _sass_counts("fwd", 128, "bf16", {})
    fwd = _sass_counts("fwd", 128, "bf16", dict(HAS_DROPOUT=316210))
    assert fwd["STS"] == fwd_base["STS"] and fwd["STL"] == 0, (fwd_base, fwd)
    assert fwd["STEP_SHFL"] >= fwd_base["STEP_SHFL"] + 16, (fwd_base, fwd)   # 2 words x 8 calls


def test_quad_8bit_draws_halve_the_philox_work():
    """8-bit draws in the "quad" mapping (16 a call): in both Gluon kernels a lane pair trades
    two words of each call (shuffles, no shared memory), so the step loops store to shared
    memory what they store without dropout, and the Philox products (IMAD.WIDE.U32) are about
    half the 16-bit mapping's: 2 calls a thread a step instead of 4 in the dK/dV kernel, 4
    instead of 8 in the forward. sm_90 SASS, d=128, bf16, 7 rounds; when written: forward loop
    1024 instructions (50 IMAD.WIDE) against 1144 (98) with 16-bit draws, dK/dV 872 (24) against
    875 (44; 921 when its selects were SELs on a predicate rebuilt each time)."""
    fused = dict(FUSED_DQ=True, NUM_STAGES=2)
    base = _sass_counts("dkdv", 128, "bf16", fused)
    q16 = _sass_counts("dkdv", 128, "bf16", dict(fused, HAS_DROPOUT=316207))
    q8 = _sass_counts("dkdv", 128, "bf16", dict(fused, HAS_DROPOUT=308207))
    assert min(base["STEP_LOOP"], q16["STEP_LOOP"], q8["STEP_LOOP"]) > 0, "no step loop found"
    assert q8["STEP_STS"] == base["STEP_STS"] and q8["STEP_LDS"] == base["STEP_LDS"], (base, q8)
    assert q8["STEP_SHFL"] >= base["STEP_SHFL"] + 4, (base, q8)          # 2 words x 2 calls
    assert 2 * 7 * 2 - 8 <= q8["STEP_IMAD_WIDE"] <= q16["STEP_IMAD_WIDE"] * 0.6, (q16, q8)
    assert q8["STEP_LOOP"] <= q16["STEP_LOOP"] + 10, (q16, q8)
    fwd_base = _sass_counts("fwd", 128, "bf16", {})
    f16 = _sass_counts("fwd", 128, "bf16", dict(HAS_DROPOUT=316207))
    f8 = _sass_counts("fwd", 128, "bf16", dict(HAS_DROPOUT=308207))
    assert f8["STS"] == fwd_base["STS"] and f8["STL"] == 0, (fwd_base, f8)
    assert f8["STEP_SHFL"] >= fwd_base["STEP_SHFL"] + 8, (fwd_base, f8)  # 2 words x 4 calls
    assert 4 * 7 * 2 - 8 <= f8["STEP_IMAD_WIDE"] <= f16["STEP_IMAD_WIDE"] * 0.6, (f16, f8)
    assert f8["STEP_LOOP"] < f16["STEP_LOOP"], (f16, f8)


def test_dropout_form_setting(monkeypatch):
    """``launch.HOPPER_DROPOUT_FORM`` reaches only the Hopper kernels' HAS_DROPOUT code (the
    portable kernels' code is unchanged), no dropout stays 0, and a bad value is refused
    naming the setting (at the next call, interpreted here)."""
    monkeypatch.setattr(launch, "HOPPER_DROPOUT_FORM", 3)
    assert launch._hopper_dropout(16110) == 316110 and launch._hopper_dropout(0) == 0
    monkeypatch.setattr(launch, "HOPPER_DROPOUT_FORM", 0)
    assert launch._hopper_dropout(8107) == 8107
    monkeypatch.setattr(launch, "HOPPER_DROPOUT_FORM", 19)
    assert launch._hopper_dropout(16207) == 1916207
    for bad in (64, -1, "3", True, 8, 27, 40):
        monkeypatch.setattr(launch, "HOPPER_DROPOUT_FORM", bad)
        with pytest.raises(ValueError, match="HOPPER_DROPOUT_FORM must be an integer in 0-63 without bit 3"):
            launch._variants()
    q = torch.randn(1, 1, 64, 32, device=DEVICE)
    with pytest.raises(ValueError, match="HOPPER_DROPOUT_FORM"):
        sf.sparse_attention(q, q, q, sf.dense(), block_size=32, dropout_p=0.1, backend="triton"
                            if DEVICE == "cuda" or os.environ.get("TRITON_INTERPRET") == "1" else "torch")


@pytest.mark.parametrize("which,d,dtype", [("fwd", 128, "bf16"), ("dkdv", 128, "bf16")])
def test_hopper_kernels_keep_wgmma_asynchronous(which, d, dtype):
    """ptxas serialises every wgmma of a kernel (advisory C7514) when other instructions read a
    product's accumulator registers while it runs, e.g. a product carried in flight across a
    loop's back edge; the kernel then waits after each wgmma. The sm_90 SASS must keep the
    waits few: one per group of products, not one per wgmma instruction (the serialised dK/dV
    variant tried had 48 waits for 48 HGMMA; the kernels have 6 and 8)."""
    counts = _sass_counts(which, d, dtype, {})
    assert counts["HGMMA"] >= 16, counts
    assert counts["DEPBAR"] * 4 <= counts["HGMMA"], f"wgmma serialised: {counts}"


@pytest.mark.parametrize("d,dtype,flags", [
    (128, "bf16", {}),
    (128, "bf16", dict(CAUSAL=True, SCHEDULED=True, PERSISTENT=True)),
    (64, "fp16", dict(HAS_SOFTCAP=2, HAS_KPM=True)),
], ids=["d128-bf16-plain", "d128-causal-persistent", "d64-fp16-softcap-kpm"])
def test_forward_softmax_overlaps_the_previous_value_product(d, dtype, flags):
    """With ``OVERLAP_PV`` (``launch.HOPPER_FWD_OVERLAP``) a step's exponentials sit between the
    wait for its S = Q K^T and the wait for the previous step's P V in the sm_90 SASS (all 64
    per thread of a [64, 128] tile, plus alpha's), so the tensor cores run P V while the
    softmax does; the kernel keeps its products asynchronous and spills nothing. Without it
    ptxas moved the second wait, with the slot's release, above the exponentials (none of the
    66 in between at the time of writing: benchmarks/results/h200-hopper/run12-rowsum)."""
    got = _sass_counts("fwd", d, dtype, dict(flags, OVERLAP_PV=True))
    assert got["EX2_OVERLAPPING_PV"] >= 64, got
    assert got["DEPBAR"] * 4 <= got["HGMMA"], got
    assert got["STL"] == 0, got


def test_forward_overlap_default_and_bad_value(monkeypatch):
    monkeypatch.setattr(launch, "HOPPER_FWD_OVERLAP", None)
    assert launch._overlap_pv(128) and not launch._overlap_pv(64)
    monkeypatch.setattr(launch, "HOPPER_FWD_OVERLAP", True)
    assert launch._overlap_pv(64)
    for bad in (1, 0, "yes"):
        monkeypatch.setattr(launch, "HOPPER_FWD_OVERLAP", bad)
        with pytest.raises(ValueError, match="HOPPER_FWD_OVERLAP must be None, True or False"):
            launch._overlap_pv(128)


@pytest.mark.parametrize("d,flags", [
    (128, {}),
    (64, dict(CAUSAL=True, SCHEDULED=True)),
    (128, dict(CAUSAL=True, SCHEDULED=True, PERSISTENT=True, OVERLAP_PV=True)),
], ids=["d128-plain", "d64-causal", "d128-causal-persistent-overlap"])
def test_forward_conditional_rescale_branches_around_the_products(d, flags):
    """With ``RESCALE`` (``launch.HOPPER_FWD_RESCALE``) the output accumulator's products of a
    step (d/2 a thread: [64, d] over 128 threads) sit behind warp-uniform branches on one
    ``VOTE.ANY`` in the sm_90 SASS, in place (no register moves added), so a warp whose rows
    kept their max skips them; without it none is branched around. At d=128 the step that
    skips runs 420 instructions a thread against 469 before, when written."""
    off = _sass_counts("fwd", d, "bf16", dict(flags, RESCALE=0.0))
    on = _sass_counts("fwd", d, "bf16", dict(flags, RESCALE=8.0))
    assert off["STEP_LOOP"] > 0 and on["STEP_LOOP"] > 0, "no step loop found"
    assert off["STEP_VOTE"] == 0 and off["STEP_BRANCHED_FMUL"] == 0, off
    assert on["STEP_VOTE"] == 1, on
    assert on["STEP_BRANCHED_FMUL"] == d // 2, on
    assert on["STEP_MOV"] <= off["STEP_MOV"], (off, on)
    assert on["STL"] == off["STL"] and on["DEPBAR"] * 4 <= on["HGMMA"], (off, on)


def test_forward_rescale_setting(monkeypatch):
    """``launch.HOPPER_FWD_RESCALE``: None by default (threshold 8 at d=128, 0 at other head
    dims, run19's A/B), or any number in [0, 15] for every head dim; anything else refused
    naming the setting, and a non-number in ``SPARSEFLASH_HOPPER_FWD_RESCALE`` naming the
    variable."""
    if "SPARSEFLASH_HOPPER_FWD_RESCALE" not in os.environ:
        assert launch.HOPPER_FWD_RESCALE is None
    monkeypatch.setattr(launch, "HOPPER_FWD_RESCALE", None)
    assert [launch._fwd_rescale(d) for d in (64, 80, 128, 256)] == [0.0, 0.0, 8.0, 0.0]
    for good in (0, 0.5, 8, 15.0):
        monkeypatch.setattr(launch, "HOPPER_FWD_RESCALE", good)
        assert launch._fwd_rescale(64) == launch._fwd_rescale(128) == float(good)
    for bad in (-1, 16, float("nan"), float("inf"), True, "8"):
        monkeypatch.setattr(launch, "HOPPER_FWD_RESCALE", bad)
        with pytest.raises(ValueError, match="HOPPER_FWD_RESCALE must be a number in"):
            launch._fwd_rescale(128)
    monkeypatch.setenv("SPARSEFLASH_HOPPER_FWD_RESCALE", "6.5")
    assert launch._env_number("SPARSEFLASH_HOPPER_FWD_RESCALE", None) == 6.5
    monkeypatch.setenv("SPARSEFLASH_HOPPER_FWD_RESCALE", "eight")
    with pytest.raises(ValueError, match="SPARSEFLASH_HOPPER_FWD_RESCALE must be a number"):
        launch._env_number("SPARSEFLASH_HOPPER_FWD_RESCALE", None)
    monkeypatch.delenv("SPARSEFLASH_HOPPER_FWD_RESCALE")
    assert launch._env_number("SPARSEFLASH_HOPPER_FWD_RESCALE", None) is None
    # the integer settings read the same way (SPARSEFLASH_HOPPER_DROPOUT_FORM)
    monkeypatch.setenv("SPARSEFLASH_HOPPER_DROPOUT_FORM", "2")
    assert launch._env_number("SPARSEFLASH_HOPPER_DROPOUT_FORM", 3, int) == 2
    monkeypatch.setenv("SPARSEFLASH_HOPPER_DROPOUT_FORM", "2.5")
    with pytest.raises(ValueError, match="SPARSEFLASH_HOPPER_DROPOUT_FORM must be an integer"):
        launch._env_number("SPARSEFLASH_HOPPER_DROPOUT_FORM", 3, int)


def test_forward_walk_setting(monkeypatch):
    """``launch.HOPPER_FWD_WALK``: None by default ("last-first" with the causal ALiBi,
    "diagonal-first" with the abs ALiBi where the rescale is conditional, table order
    otherwise), or a walk name for every two-consumer forward; table order with three
    consumers; anything else refused naming the setting."""
    if "SPARSEFLASH_HOPPER_WALK" not in os.environ:
        assert launch.HOPPER_FWD_WALK is None
    monkeypatch.setattr(launch, "HOPPER_FWD_WALK", None)
    assert [launch._walk(2, a, 8.0) for a in (0, 1, 2)] == [0, 3, 2]
    assert [launch._walk(2, a, 0.0) for a in (0, 1, 2)] == [0, 0, 2]
    assert launch._walk(3, 2, 8.0) == 0 and launch._walk(3, 1, 8.0) == 0
    # the launch's rescale: conditional at d=128 only, so the abs form's walk moves there only
    assert launch._walk(2, 1, launch._fwd_rescale(128)) == 3
    assert launch._walk(2, 1, launch._fwd_rescale(64)) == 0
    for name, code in (("table", 0), ("descending", 1), ("last-first", 2), ("diagonal-first", 3)):
        monkeypatch.setattr(launch, "HOPPER_FWD_WALK", name)
        assert [launch._walk(2, a, r) for a in (0, 1, 2) for r in (0.0, 8.0)] == [code] * 6
        assert launch._walk(3, 0, 8.0) == 0
    for bad in ("reverse", 1, True):
        monkeypatch.setattr(launch, "HOPPER_FWD_WALK", bad)
        with pytest.raises(ValueError, match="HOPPER_FWD_WALK must be None or one of"):
            launch._walk(2, 2, 8.0)


@pytest.mark.parametrize("walk", [1, 2, 3], ids=["descending", "last-first", "diagonal-first"])
def test_walks_compile_to_the_same_step_loop(walk):
    """Another walk changes which table entry a step reads (``_walk``), not the step's work:
    the causal ALiBi forward's step loop is within a few instructions of the table-order one
    (sm_90 SASS), unspilled."""
    flags = dict(CAUSAL=True, OVERLAP_PV=True, HAS_ALIBI=2, RESCALE=8.0)
    table = _sass_counts("fwd", 128, "bf16", flags)
    other = _sass_counts("fwd", 128, "bf16", dict(flags, WALK=walk))
    assert other["STEP_LOOP"] > 0 and abs(other["STEP_LOOP"] - table["STEP_LOOP"]) <= 8, (table, other)
    assert other["STL"] == 0, "register spills"


def test_causal_dkdv_kernel_spills_less_with_its_registers():
    """The causal dK/dV kernel's consumer threads get more registers than the 232 it once had
    (``launch._HOPPER_BWD_REGS``): its comparison of key and query positions keeps 16 more
    live across the loop. With them it spills fewer registers (in the sm_90 SASS, 33 stores
    against 53 at the time of writing)."""
    regs = launch._HOPPER_BWD_REGS["causal"]
    assert regs > 232
    spills = {}
    for n in (232, regs):
        counts = _sass_counts("dkdv", 128, "bf16", dict(CAUSAL=True, CONSUMER_REGS=n))
        assert counts["DEPBAR"] * 4 <= counts["HGMMA"], counts
        spills[n] = counts["STL"]
    assert spills[regs] < spills[232], spills


@pytest.mark.parametrize("flags", [{}, dict(CAUSAL=True, HAS_SOFTCAP=2), dict(HAS_ALIBI=1, HAS_KPM=True),
                                   dict(CAUSAL=True, GROUP_SIZE=2)],
                         ids=["plain", "causal-softcap", "alibi-key-padding", "causal-gqa"])
def test_dkdv_kv_register_operands_at_d64(flags):
    """``launch.HOPPER_BWD_KV_REGS`` (the kernel's KV_REGS 2, the fused kernel's form): at d=64
    with 128-query steps, S^T = K Q^T and dP^T = V dO^T take K and V from registers: 4 wgmma
    instructions (K = 16) each, per 64-query part (2 a step) and consumer partition (2), so 32
    more with a register A operand in the sm_90 SASS (64 with dV's and dK's) than with both in
    shared memory. No step loop overwrites them (RS_CLOBBERED: they are not passed through the
    waits, so only the SASS says ptxas keeps them), and none spills but GQA's. With the softcap
    the launch splits each partition's step loop in two (``launch.HOPPER_BWD_SPLIT_LOOPS``):
    the same products in each loop, so twice the count."""
    base = dict(flags, BLOCK_M=128, DQ_ROWS=True, FUSED_DQ=True,
                NUM_STAGES=launch._fused_stages(64, dict(HAS_DROPOUT=0), 128))
    loops = 2 if launch._bwd_rows_late(64, flags) & 2 else 1
    regs = _sass_counts("dkdv", 64, "bf16", dict(base, KV_REGS=2))
    assert regs["RS_CLOBBERED"] == [], regs["RS_CLOBBERED"][:4]
    assert regs["HGMMA_RS"] == loops * 2 * 2 * 4 * 4, regs
    assert regs["DEPBAR"] * 4 <= regs["HGMMA"], regs
    if "GROUP_SIZE" not in flags:
        # (the split loops keep one word in local memory outside them: 1 spill store)
        assert regs["STL"] <= loops - 1 and not any(regs["STEP_LOOPS_LOCAL"]), regs
    if not flags:
        # with dV and dK through shared memory (OUT_TMA, launch.HOPPER_BWD_OUT_TMA) none in
        # the step loops either; after them ptxas keeps 2 words in local memory
        copy = _sass_counts("dkdv", 64, "bf16", dict(base, KV_REGS=2, OUT_TMA=True))
        assert copy["STL"] <= 2 and not any(copy["STEP_LOOPS_LOCAL"]), copy
        smem = _sass_counts("dkdv", 64, "bf16", dict(base, KV_REGS=0))
        assert regs["HGMMA"] == smem["HGMMA"], (regs, smem)
        assert regs["HGMMA_RS"] - smem["HGMMA_RS"] == 2 * 2 * 2 * 4, (regs, smem)


def test_unfused_dkdv_kv_registers_go_through_the_wait():
    """The unfused d=64 dK/dV kernel (no dQ, 64-query steps) with K and V in registers: not
    passed through a wait (KV_REGS 2), ptxas gives K's registers to P^T inside the step loop,
    so from the second step on S^T multiplies P^T (run26: dK and dV off by 0.4-1.1 on the GPU),
    and RS_CLOBBERED finds it; passed through the step's last wait (KV_REGS 1, the launch's
    form for this kernel) the loop keeps them, without a spill."""
    base = dict(FUSED_DQ=False, BLOCK_M=64, NUM_STAGES=launch._HOPPER_BWD_STAGES[64])
    untied = _sass_counts("dkdv", 64, "bf16", dict(base, KV_REGS=2))
    fresh = [mma for mma, _ in untied["RS_CLOBBERED"] if re.search(r"R\d+, R\d+, gdesc\[\w+\], RZ", mma)]
    assert fresh, untied["RS_CLOBBERED"][:4]          # S^T's or dP^T's K or V
    tied = _sass_counts("dkdv", 64, "bf16", dict(base, KV_REGS=1))
    assert tied["RS_CLOBBERED"] == [], tied["RS_CLOBBERED"][:4]
    assert tied["HGMMA_RS"] == untied["HGMMA_RS"] == 2 * 4 * 4, tied
    assert tied["STL"] == 0, tied


def test_fused_dkdv_registers_split_the_spills_between_the_consumers():
    """The fused dK/dV kernel (d=128, non-causal: the default backward on Hopper) has two consumer
    partitions: the worker one takes ``launch._HOPPER_BWD_REGS["plain"]`` registers a thread,
    Gluon's default partition what the others leave (480 minus that). At 232 the worker's step
    loop loaded and stored 18 spilled words a step and the default's none; the warpgroups meet
    every step, so the slower set the pace (Nsight Compute, benchmarks/results/h200-hopper/
    run24-bwd-profile). The default registers leave fewer local accesses in the worse of the two
    step loops than the other counts tried do (232, 240, 248: 16, 5 and 16 at the time of
    writing)."""
    regs = launch._HOPPER_BWD_REGS["plain"]
    fused = dict(FUSED_DQ=True, NUM_STAGES=launch._HOPPER_FUSED_STAGES[128])
    worst = {}
    for n in sorted({232, 240, 248, regs}):
        counts = _sass_counts("dkdv", 128, "bf16", dict(fused, CONSUMER_REGS=n))
        assert len(counts["STEP_LOOPS_LOCAL"]) >= 2, counts         # one per consumer partition
        worst[n] = max(counts["STEP_LOOPS_LOCAL"])
    assert all(worst[regs] < worst[n] for n in worst if n != regs), worst


@pytest.mark.parametrize("flags", [{}, dict(CAUSAL=True, HAS_SOFTCAP=2)], ids=["plain", "causal-softcap"])
def test_dkdv_step_rows_read_late_spill_less(flags):
    """``launch.HOPPER_BWD_ROWS_LATE``: the fused dK/dV kernel's consumers read a step's table
    entry after issuing its first two products. Read before them, the entry's address came from
    a spilled register and held the products back (run24), and the step loops of both consumer
    partitions made more local-memory accesses in all (sm_90 SASS, d=128, 240 registers:
    plain 5 against 8, causal softcap 53 against 68 at the time of writing)."""
    fused = dict(flags, FUSED_DQ=True, NUM_STAGES=launch._HOPPER_FUSED_STAGES[128], CONSUMER_REGS=240)
    late = _sass_counts("dkdv", 128, "bf16", dict(fused, ROWS_LATE=True))
    early = _sass_counts("dkdv", 128, "bf16", dict(fused, ROWS_LATE=False))
    assert late["DEPBAR"] * 4 <= late["HGMMA"], late
    assert sum(late["STEP_LOOPS_LOCAL"][:2]) < sum(early["STEP_LOOPS_LOCAL"][:2]), (late, early)


def test_dkdv_split_loops_leave_the_full_steps_no_local_memory():
    """``launch.HOPPER_BWD_SPLIT_LOOPS`` (ROWS_LATE bit 2): the dK/dV consumers run a column's
    full steps and its masked steps as two loops. In one loop every step compares its counter
    with the column's full-step count, a spilled word, and each step loop reloads words from
    local memory (2-5 accesses a step); split, each consumer partition has two step loops, and
    its full steps' loop (no masking) makes fewer local accesses (0 and 1) than any step loop of
    the one-loop form, and is shorter (sm_90 SASS, d=128 causal, the default fused-dQ flags;
    the masked steps' loops make about 37 a step, stop 58)."""
    flags = dict(FUSED_DQ=True, NUM_STAGES=launch._HOPPER_FUSED_STAGES[128], CAUSAL=True,
                 CONSUMER_REGS=240, SCHEDULED=True, STATS_TMA=1)
    one = _sass_counts("dkdv", 128, "bf16", dict(flags, ROWS_LATE=1))
    split = _sass_counts("dkdv", 128, "bf16", dict(flags, ROWS_LATE=3))
    assert len(one["STEP_LOOPS_LOCAL"]) >= 2, one
    assert len(split["STEP_LOOPS_LOCAL"]) >= 4, split           # two loops per consumer partition
    assert sum(sorted(split["STEP_LOOPS_LOCAL"])[:2]) < min(one["STEP_LOOPS_LOCAL"]), (split, one)
    assert split["STEP_LOOP"] < one["STEP_LOOP"] and split["HGMMA"] == 2 * one["HGMMA"], (split, one)
    assert split["DEPBAR"] * 4 <= split["HGMMA"], split


def test_dkdv_split_loops_default_and_bad_value(monkeypatch):
    """``launch.HOPPER_BWD_SPLIT_LOOPS`` None splits the dK/dV step loop with the softcap when
    neither dropout nor ALiBi is on (where it was timed faster, stop 58), True / False always /
    never; ROWS_LATE's bit 1 (the table entry read late, d=128) is independent of it (and so is
    bit 16, ``HOPPER_BWD_CAP_EARLY``, off here: its own test follows)."""
    monkeypatch.setattr(launch, "HOPPER_BWD_SPLIT_LOOPS", None)
    monkeypatch.setattr(launch, "HOPPER_BWD_CAP_EARLY", False)
    cap, drop, alibi = dict(HAS_SOFTCAP=2), dict(HAS_DROPOUT=316207), dict(HAS_ALIBI=1)
    assert launch._bwd_rows_late(128) == 1 and launch._bwd_rows_late(64) == 0
    assert launch._bwd_rows_late(128, cap) == 3 and launch._bwd_rows_late(64, cap) == 2
    assert launch._bwd_rows_late(128, dict(HAS_SOFTCAP=2, HAS_DROPOUT=0)) == 3
    assert launch._bwd_rows_late(128, {**cap, **drop}) == 1
    assert launch._bwd_rows_late(128, {**cap, **alibi}) == 1
    monkeypatch.setattr(launch, "HOPPER_BWD_SPLIT_LOOPS", True)
    assert launch._bwd_rows_late(64) == 2 and launch._bwd_rows_late(128, drop) == 3
    monkeypatch.setattr(launch, "HOPPER_BWD_SPLIT_LOOPS", False)
    assert launch._bwd_rows_late(128, cap) == 1
    monkeypatch.setattr(launch, "HOPPER_BWD_SPLIT_LOOPS", 1)
    with pytest.raises(ValueError, match="HOPPER_BWD_SPLIT_LOOPS"):
        launch._bwd_rows_late(128)


def test_dkdv_softcap_factor_early_default_and_bad_value(monkeypatch):
    """``launch.HOPPER_BWD_CAP_EARLY`` (ROWS_LATE bit 16): None (the default) and True set it
    wherever the softcap is on, at either head dim, with or without dropout (whose branch
    ignores it); False never; anything else is refused, naming the setting."""
    cap = dict(HAS_SOFTCAP=2)
    for value in (None, True):
        monkeypatch.setattr(launch, "HOPPER_BWD_CAP_EARLY", value)
        assert launch._bwd_rows_late(128, cap) & 16 and launch._bwd_rows_late(64, cap) & 16
        assert launch._bwd_rows_late(128, dict(cap, HAS_DROPOUT=316207)) & 16
        assert not launch._bwd_rows_late(128) & 16 and not launch._bwd_rows_late(128, dict(HAS_ALIBI=2)) & 16
    monkeypatch.setattr(launch, "HOPPER_BWD_CAP_EARLY", False)
    assert not launch._bwd_rows_late(128, cap) & 16
    monkeypatch.setattr(launch, "HOPPER_BWD_CAP_EARLY", 1)
    with pytest.raises(ValueError, match="HOPPER_BWD_CAP_EARLY"):
        launch._bwd_rows_late(128, cap)


def test_dkdv_softcap_factor_early_shortens_the_full_steps():
    """The softcap's factor taken into P^T before dV's product (ROWS_LATE bit 16) in the split
    loops (sm_90 SASS, d=128 causal, the default fused-dQ flags): the full steps' loops run
    fewer instructions and make no more local-memory accesses a step than with the factor taken
    in after the issue (stop 68: 517 against 537 instructions, 3 and 3 accesses against 7 and 4);
    the masked steps' loops spill more (77-85 against 69-75), which the timing took."""
    flags = dict(FUSED_DQ=True, NUM_STAGES=launch._HOPPER_FUSED_STAGES[128], CAUSAL=True,
                 CONSUMER_REGS=240, SCHEDULED=True, STATS_TMA=1, HAS_SOFTCAP=2)
    late = _sass_counts("dkdv", 128, "bf16", dict(flags, ROWS_LATE=3))
    early = _sass_counts("dkdv", 128, "bf16", dict(flags, ROWS_LATE=19))
    assert early["STEP_LOOP"] < late["STEP_LOOP"], (early["STEP_LOOP"], late["STEP_LOOP"])
    full = lambda c: sorted(c["STEP_LOOPS_LOCAL"])[:2]          # noqa: E731 (the full steps' loops)
    assert sum(full(early)) <= sum(full(late)), (early["STEP_LOOPS_LOCAL"], late["STEP_LOOPS_LOCAL"])
    assert early["HGMMA"] == late["HGMMA"]


def test_dkdv_output_copy_reload_default_and_bad_value(monkeypatch):
    """``launch.HOPPER_BWD_OUT_RELOAD``: True by default, the copy's OUT_TMA is then 2 (the
    tile's coordinates found again after the step loops), 1 with False, 0 without the copy
    either way; anything but a bool is refused, naming the setting."""
    assert launch.HOPPER_BWD_OUT_RELOAD is True
    assert launch._bwd_out_mode(True) == 2 and launch._bwd_out_mode(False) == 0
    monkeypatch.setattr(launch, "HOPPER_BWD_OUT_RELOAD", False)
    assert launch._bwd_out_mode(True) == 1 and launch._bwd_out_mode(False) == 0
    monkeypatch.setattr(launch, "HOPPER_BWD_OUT_RELOAD", 1)
    with pytest.raises(ValueError, match="HOPPER_BWD_OUT_RELOAD must be True or False"):
        launch._bwd_out_mode(True)


def test_dkdv_output_copy_reload_eases_the_softcap_loops():
    """With the output copy, the folded softcap's d=128 dK/dV kernel (sm_90 SASS, causal, the
    launch's fused-dQ flags) makes fewer local-memory accesses a step in its full steps' loops
    when the tile's coordinates are found again after the loops (OUT_TMA 2, the default) than
    when they are held across them (OUT_TMA 1): stop 69 counted 1 and 18 against 3 and 32, and
    the held form's 32 was what the reload was built to remove. The same products either way."""
    flags = dict(FUSED_DQ=True, NUM_STAGES=launch._HOPPER_FUSED_STAGES[128], CAUSAL=True,
                 CONSUMER_REGS=240, SCHEDULED=True, STATS_TMA=1, HAS_SOFTCAP=2, ROWS_LATE=19)
    held = _sass_counts("dkdv", 128, "bf16", dict(flags, OUT_TMA=1))
    reloaded = _sass_counts("dkdv", 128, "bf16", dict(flags, OUT_TMA=2))
    full = lambda c: sorted(c["STEP_LOOPS_LOCAL"])[:2]          # noqa: E731 (the full steps' loops)
    assert sum(full(reloaded)) < sum(full(held)), (reloaded["STEP_LOOPS_LOCAL"], held["STEP_LOOPS_LOCAL"])
    assert reloaded["HGMMA"] == held["HGMMA"]
    # both forms store dV and dK by bulk copies (two a consumer), the register stores none
    bulk = r"cp\.async\.bulk\.tensor\.\dd\.global\.shared"
    for mode, want in ((0, 0), (1, 4), (2, 4)):
        ptx = _ptx("dkdv", 128, "bf16", dict(flags, OUT_TMA=mode))
        assert len(re.findall(bulk, ptx)) == want, mode


def test_three_consumer_forward_partitions_and_registers():
    """The 192-query forward (``NUM_CONSUMERS=3``): three consumer warpgroups and the producer
    warp, each consumer thread with 160 registers and the producer's with 24
    (``launch._HOPPER_FWD_REGS[3]``: 4 warpgroups fill the SM's 65536), three products per
    warpgroup per step site as with two, and the same steady-state loop without spills: the
    persistent build's sm_90 SASS stores nothing to local memory."""
    ptx = _ptx("fwd", 64, "bf16", dict(NUM_CONSUMERS=3))
    inc = [int(r) for r in re.findall(r"setmaxnreg\.inc\.sync\.aligned\.u32\s+(\d+)", ptx)]
    dec = [int(r) for r in re.findall(r"setmaxnreg\.dec\.sync\.aligned\.u32\s+(\d+)", ptx)]
    consumer, producer = launch._HOPPER_FWD_REGS[3]
    assert inc.count(consumer) == 2, inc             # the two worker consumer partitions
    assert producer in dec, dec
    # the default partition (the first consumer) keeps what the others leave: 168
    assert 65536 // 128 - 2 * consumer - producer in dec, dec
    two = _sass_counts("fwd", 64, "bf16", dict(PERSISTENT=True))
    three = _sass_counts("fwd", 64, "bf16", dict(NUM_CONSUMERS=3, PERSISTENT=True))
    assert three["HGMMA"] == two["HGMMA"] * 3 // 2, (two, three)
    assert three["STL"] == 0, three


def test_dynamic_tiles_take_one_atomic_per_program():
    """``DYNAMIC``: the producer warp takes each program after its first from a counter in
    global memory, one lane's atomic add per program (broadcast to the warp), and hands it to
    the consumers through shared memory; ``launch.HOPPER_DYNAMIC_TILES`` must be a bool."""
    ptx = _ptx("fwd", 128, "bf16", dict(PERSISTENT=True, DYNAMIC=True))
    assert len(re.findall(r"atom\.global\.gpu\.acq_rel\.add\.u32", ptx)) == 1
    static = _ptx("fwd", 128, "bf16", dict(PERSISTENT=True))
    assert not re.search(r"atom\.global", static)


def test_dynamic_tiles_default_and_switch(monkeypatch):
    """``launch._dynamic_tiles``: by default ("run30") run-time tiles with any number of
    consumers; in the "run29" pipeline with three (which then run persistent) and fixed tiles
    with two; True / False force; other values are refused."""
    assert launch.HOPPER_DYNAMIC_TILES is None
    monkeypatch.setattr(launch, "HOPPER_FWD_PIPELINE", None)     # (SPARSEFLASH_HOPPER_FWD_PIPELINE)
    assert launch._dynamic_tiles(3) is True and launch._dynamic_tiles(2) is True
    monkeypatch.setattr(launch, "HOPPER_FWD_PIPELINE", "run29")
    assert launch._dynamic_tiles(3) is True and launch._dynamic_tiles(2) is False
    monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", True)
    assert launch._dynamic_tiles(2) is True
    monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", False)
    assert launch._dynamic_tiles(3) is False
    for bad in (1, 0, "yes"):
        monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", bad)
        with pytest.raises(ValueError, match="HOPPER_DYNAMIC_TILES must be None, True or False"):
            launch._dynamic_tiles(3)


@pytest.mark.parametrize("pattern,n,causal,want", [
    (sf.local(2), 16384, False, True),
    (sf.dense(), 4096, True, True),
    (sf.dense(), 4096, False, False),
    (sf.dense(), 16384, True, False),
    (sf.local(28), 16384, False, False),
], ids=["local2-16k", "dense-causal-4k", "dense-4k", "dense-causal-16k", "local28-16k"])
def test_dkdv_output_copy_rule(pattern, n, causal, want, monkeypatch):
    """``launch._bwd_out_tma``: by default dK and dV go through shared memory where the
    table's non-empty columns hold at most 3072 queries on average (read once per layout into
    its cache), through register stores elsewhere, without a cache and at d=128 with the abs
    ALiBi (HAS_ALIBI 1) or the causal one's unfolded rows (its loops spilled); the folded causal
    ALiBi and d=64 follow the table; True / False force, ALiBi or not; other values are
    refused."""
    layout = sf.compile(pattern, n, block_size=128, causal=causal)
    bwd_ptr = torch.tensor(np.array(layout.bwd_ptr))
    cache = {}
    assert launch._bwd_out_tma(layout, bwd_ptr, cache) is want
    assert ("bwd_out_tma", "cpu") in cache
    assert launch._bwd_out_tma(layout, bwd_ptr, None) is False
    for alibi in (1, 2):
        assert launch._bwd_out_tma(layout, bwd_ptr, cache, alibi, 128) is (alibi == 2 and want)
        assert launch._bwd_out_tma(layout, bwd_ptr, cache, alibi, 64) is want
    monkeypatch.setattr(launch, "HOPPER_BWD_ALIBI_FOLD", False)
    assert launch._bwd_out_tma(layout, bwd_ptr, cache, 2, 128) is False
    assert launch._bwd_out_tma(layout, bwd_ptr, cache, 2, 64) is want
    monkeypatch.setattr(launch, "HOPPER_BWD_ALIBI_FOLD", True)
    assert launch._bwd_out_tma(layout, bwd_ptr, cache, 0, 64) is want
    monkeypatch.setattr(launch, "HOPPER_BWD_OUT_TMA", not want)
    assert launch._bwd_out_tma(layout, bwd_ptr, cache) is (not want)
    assert launch._bwd_out_tma(layout, bwd_ptr, cache, 2, 128) is (not want)
    monkeypatch.setattr(launch, "HOPPER_BWD_OUT_TMA", 1)
    with pytest.raises(ValueError, match="HOPPER_BWD_OUT_TMA must be None, True or False"):
        launch._bwd_out_tma(layout, bwd_ptr, cache)


def test_output_copy_default_and_switch(monkeypatch):
    """``launch._out_tma``: by default the output goes through shared memory and a bulk copy
    with two consumer warpgroups or two Q buffers, and through register stores with three
    consumers and one Q buffer; True / False force; other values are refused."""
    assert launch.HOPPER_FWD_OUT_TMA is None
    assert launch._out_tma(2) is True and launch._out_tma(3) is False
    assert launch._out_tma(3, 2) is True and launch._out_tma(2, 2) is True
    monkeypatch.setattr(launch, "HOPPER_FWD_OUT_TMA", True)
    assert launch._out_tma(3) is True
    monkeypatch.setattr(launch, "HOPPER_FWD_OUT_TMA", False)
    assert launch._out_tma(2) is False
    for bad in (1, "on"):
        monkeypatch.setattr(launch, "HOPPER_FWD_OUT_TMA", bad)
        with pytest.raises(ValueError, match="HOPPER_FWD_OUT_TMA must be None, True or False"):
            launch._out_tma(2)


@pytest.mark.parametrize("which,d,flags,stores,spill_free", [
    ("fwd", 128, dict(CAUSAL=True, SCHEDULED=True), 2, True),
    ("fwd", 64, dict(NUM_CONSUMERS=3, PERSISTENT=True, DYNAMIC=True, CAUSAL=True), 3, True),
    ("dkdv", 128, dict(CAUSAL=True, FUSED_DQ=True, NUM_STAGES=2, CONSUMER_REGS=240), 2 * 2, False),
    ("dkdv", 64, dict(BLOCK_M=128, DQ_ROWS=True, FUSED_DQ=True, NUM_STAGES=2, KV_REGS=2), 2 * 2, False),
], ids=["d128-two-consumers", "d64-three-consumers-dynamic", "dkdv-d128-fused-causal",
        "dkdv-d64-fused-kv-registers"])
def test_output_copies_compile_to_bulk_stores(which, d, flags, stores, spill_free):
    """With ``OUT_TMA`` each consumer partition of the forward stores its output tile with one
    bulk tensor copy from shared memory and waits for the copy to have read its Q slot; each
    of the dK/dV kernel's stores dV and then dK with a bulk copy each from its V slot,
    waiting in between for the first copy to have read it (the masked register stores stay
    for partial blocks). Without it, no bulk store (the copy engine's dQ adds are
    reductions). The forward's builds do not spill."""
    on = _ptx(which, d, "bf16", dict(flags, OUT_TMA=True))
    off = _ptx(which, d, "bf16", dict(flags, OUT_TMA=False))
    store = r"cp\.async\.bulk\.tensor\.4d\.global\.shared::cta"
    assert len(re.findall(store, on)) == stores
    assert len(re.findall(r"cp\.async\.bulk\.wait_group", on)) >= stores
    assert not re.search(store, off)
    if spill_free:
        assert not re.search(r"\b(ld|st)\.local", on), "register spills"


def _prefix_rows_slow(layout):
    """``launch._prefix_rows`` by its definition, row by row."""
    ptr, idx = np.array(layout.fwd_ptr), np.array(layout.fwd_idx)
    rows = (len(ptr) - 1) // layout.table_heads
    for r in range(len(ptr) - 2):
        if (r + 1) % rows == 0:
            continue
        a, b = list(idx[ptr[r]:ptr[r + 1]]), list(idx[ptr[r + 1]:ptr[r + 2]])
        if b[:len(a)] != a:
            return False
    return True


@pytest.mark.parametrize("pattern,n,causal,kw,want", [
    (sf.dense(), 4096, False, {}, True),
    (sf.dense(), 4096, True, {}, True),
    (sf.dense(), 1000, True, dict(kv_len=3000), True),
    (sf.local(2), 4096, True, {}, False),
    (sf.local(2) | sf.global_blocks(1), 2048, False, {}, False),
    (sf.global_blocks(1), 2048, False, {}, False),
    (sf.bigbird(window=1, globals=1, random=2), 2048, False, dict(num_heads=4), False),
], ids=["dense", "causal", "causal-kv-longer", "local", "local-global", "global-rows", "bigbird-per-head"])
def test_prefix_rows_rule(pattern, n, causal, kw, want):
    """Three consumers need every table row to be a prefix of the next one of its head:
    dense and causal tables are (with kv_len > seq_len too); sliding windows, global rows (a
    full row before a short one) and random per-head rows are not. Checked against the row-by-row definition."""
    layout = sf.compile(pattern, n, block_size=128, causal=causal, **kw)
    ptr = torch.from_numpy(np.array(layout.fwd_ptr))
    idx = torch.from_numpy(np.array(layout.fwd_idx))
    got = launch._prefix_rows(ptr, idx, {}, layout.table_heads)
    assert got is want is _prefix_rows_slow(layout)


def test_three_consumers_where_the_rule_allows(monkeypatch):
    """``launch._fwd_consumers``: by default three at d=64 on prefix tables without softcap,
    ALiBi, key padding, windows or dropout, two elsewhere; ``HOPPER_FWD_CONSUMERS=3`` raises naming
    the reason where three cannot run; other values are refused."""
    dense = sf.compile(sf.dense(), 4096, block_size=128, causal=True)
    local = sf.compile(sf.local(2), 4096, block_size=128)
    window = sf.compile(sf.dense(), 4096, block_size=128, causal=True, window_size=(300, 0))

    def pick(layout, d=64, **kw):
        ptr = torch.from_numpy(np.array(layout.fwd_ptr))
        idx = torch.from_numpy(np.array(layout.fwd_idx))
        args = dict(kpm=None, softcap=0.0, alibi=None)
        args.update(kw)
        return launch._fwd_consumers(layout, d, ptr, idx, {}, **args)

    assert pick(dense) == 3
    assert pick(dense, d=128) == 2
    assert pick(local) == 2
    assert pick(window) == 2
    assert pick(dense, softcap=30.0) == 2
    assert pick(dense, alibi=torch.ones(2)) == 2
    assert pick(dense, dropout_p=0.1) == 2
    ptr = torch.from_numpy(np.array(dense.fwd_ptr))
    idx = torch.from_numpy(np.array(dense.fwd_idx))
    assert launch._fwd_consumers(dense, 64, ptr, idx, None, None, 0.0, None) == 2
    monkeypatch.setattr(launch, "HOPPER_FWD_CONSUMERS", 3)
    assert pick(dense, softcap=30.0) == 3
    with pytest.raises(RuntimeError, match="HOPPER_FWD_CONSUMERS=3.*not a prefix"):
        pick(local)
    with pytest.raises(RuntimeError, match="head_dim is not 64"):
        pick(dense, d=128)
    monkeypatch.setattr(launch, "HOPPER_FWD_CONSUMERS", 2)
    assert pick(dense) == 2
    monkeypatch.setattr(launch, "HOPPER_FWD_CONSUMERS", 4)
    with pytest.raises(ValueError, match="HOPPER_FWD_CONSUMERS must be None, 2 or 3"):
        pick(dense)


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
@pytest.mark.parametrize("walk,persistent", [("descending", False), ("last-first", False),
                                             ("last-first", 3), ("diagonal-first", False),
                                             ("diagonal-first", 3)],
                         ids=["descending", "last-first", "last-first-persistent", "diagonal-first",
                              "diagonal-first-persistent"])
@pytest.mark.parametrize("name,pattern,kw", CASES, ids=[c[0] for c in CASES])
def test_hopper_forward_walks_match_the_oracle(name, pattern, kw, walk, persistent, hopper_only,
                                               monkeypatch):
    """Every row walked in another order (``launch.HOPPER_FWD_WALK``; "last-first" is the
    causal ALiBi's default) on every layout of the oracle cases: partial blocks first,
    documents, kv-longer, windows, GQA, batches; one CTA per tile and persistent (the ring
    carried across tiles)."""
    monkeypatch.setattr(launch, "HOPPER_FWD_WALK", walk)
    monkeypatch.setattr(launch, "HOPPER_PERSISTENT", persistent)
    kw = dict(kw)
    kw.setdefault("d", 128)
    check(pattern, bs=128, dtype=torch.bfloat16, backend="triton", **kw)


@gpu
@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed-tiles", "dynamic-tiles"])
@pytest.mark.parametrize("name,pattern,kw", CASES, ids=[c[0] for c in CASES])
def test_hopper_persistent_forward_matches_the_oracle(name, pattern, kw, dynamic, hopper_only, monkeypatch):
    """The persistent forward (``launch.HOPPER_PERSISTENT``) with at most 3 CTAs, so that each
    walks many query tiles (the K/V ring and Q's barriers carried across them), its tiles
    fixed at launch or handed out at run time (``HOPPER_DYNAMIC_TILES``), on every layout of
    the oracle cases: packed documents, kv-longer, windows, GQA, batches."""
    monkeypatch.setattr(launch, "HOPPER_PERSISTENT", 3)
    monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", dynamic)
    kw = dict(kw)
    kw.setdefault("d", 128)
    check(pattern, bs=128, dtype=torch.bfloat16, backend="triton", **kw)


@gpu
@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
def test_hopper_persistent_forward_equals_one_cta_per_tile(dropout_p, hopper_only, monkeypatch):
    """Each tile's arithmetic does not depend on which CTA runs it: the persistent forward,
    with one CTA per SM and with 5 CTAs, its tiles fixed at launch or handed out at run time,
    gives bit for bit the outputs and LSE of one CTA per tile, on a causal scheduled layout (heavy rows first, many tiles per CTA), with and without
    dropout (the same seed draws the same mask)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 8, 4096, 128, device="cuda", dtype=torch.bfloat16, generator=g)
               for _ in range(3))
    pattern = sf.local(3) | sf.global_blocks(1)
    results = []
    for persistent, dynamic in ((False, False), (True, False), (5, False), (True, True), (5, True)):
        monkeypatch.setattr(launch, "HOPPER_PERSISTENT", persistent)
        monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", dynamic)
        torch.manual_seed(7)
        results.append(sf.sparse_attention(q, k, v, pattern, block_size=128, causal=True,
                                           dropout_p=dropout_p, return_lse=True))
    for out, lse in results[1:]:
        assert torch.equal(out, results[0][0]) and torch.equal(lse, results[0][1])
    assert torch.isfinite(results[0][0]).all()


@gpu
@pytest.mark.parametrize("d", [128, 64])
@pytest.mark.parametrize("option", ["none", "dropout", "softcap", "alibi-causal", "alibi-abs"])
def test_hopper_run30_pipeline_equals_run29(option, d, hopper_only, monkeypatch):
    """The "run30" forward pipeline (``launch.HOPPER_FWD_PIPELINE``: at d=128 2 slots
    released in two halves, persistent CTAs on every SM with run-time tiles and two Q buffers)
    gives bit for bit the outputs and LSE of the default with each option (the same seed draws
    the same dropout mask), GQA, a batch of 2 and a length that ends inside a tile."""
    g = torch.Generator(device="cuda").manual_seed(4)
    q = torch.randn(2, 8, 3000, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(2, 4, 3000, d, device="cuda", dtype=torch.bfloat16, generator=g)
            for _ in range(2))
    kw = dict(causal=option != "alibi-abs")
    if option == "dropout":
        kw["dropout_p"] = 0.1
    elif option == "softcap":
        kw["softcap"] = 30.0
    elif option.startswith("alibi"):
        kw["alibi_slopes"] = torch.rand(8, device="cuda", dtype=torch.float32) * 0.1
    pattern = sf.local(3) | sf.global_blocks(1)
    results = []
    for pipeline in ("run29", "run30"):
        monkeypatch.setattr(launch, "HOPPER_FWD_PIPELINE", pipeline)
        torch.manual_seed(7)
        results.append(sf.sparse_attention(q, k, v, pattern, block_size=128, return_lse=True, **kw))
    (out, lse), (out30, lse30) = results
    assert torch.isfinite(out30).all()
    assert torch.equal(out, out30) and torch.equal(lse, lse30)


def test_forward_ring_switches(monkeypatch):
    """``launch._pipeline``, ``launch._kv_split``, ``launch._q_buffers`` and
    ``launch._fwd_stages``: the defaults ("run30": 2 slots released in two halves at d=128 and
    4 at d=64, two Q buffers where persistent), the "run29" pipeline (3 slots at d=128 and 4 at
    d=64, released whole, one Q buffer), overrides that fit, and refusals naming the switch: a
    ring and Q buffers past 227 KiB of shared memory at d=128, a non-int depth, a non-bool
    switch, an unknown pipeline."""
    monkeypatch.setattr(launch, "HOPPER_FWD_PIPELINE", None)     # (SPARSEFLASH_HOPPER_FWD_PIPELINE)
    assert launch._pipeline() == "run30"
    assert launch.HOPPER_FWD_KV_SPLIT is None and launch.HOPPER_FWD_Q_BUFFERS is None
    assert launch._kv_split(128) is True and launch._kv_split(64) is False
    assert launch._q_buffers(True) == 2 and launch._q_buffers(False) == 1
    assert launch.HOPPER_FWD_STAGES is None
    assert launch._fwd_stages(128, 2, 2) == 2 and launch._fwd_stages(64, 3, 2) == 4
    monkeypatch.setattr(launch, "HOPPER_FWD_PIPELINE", "run29")
    assert launch._kv_split(128) is False and launch._kv_split(64) is False
    assert launch._q_buffers(True) == 1 and launch._q_buffers(False) == 1
    assert launch._fwd_stages(128, 2) == 3 and launch._fwd_stages(64, 3) == 4
    monkeypatch.setattr(launch, "HOPPER_FWD_PIPELINE", "run31")
    with pytest.raises(ValueError, match="HOPPER_FWD_PIPELINE .* must be None or one of"):
        launch._kv_split(128)
    monkeypatch.setattr(launch, "HOPPER_FWD_PIPELINE", "run29")
    monkeypatch.setattr(launch, "HOPPER_FWD_KV_SPLIT", True)
    assert launch._kv_split(64) is True
    monkeypatch.setattr(launch, "HOPPER_FWD_KV_SPLIT", 1)
    with pytest.raises(ValueError, match="HOPPER_FWD_KV_SPLIT must be None, True or False"):
        launch._kv_split(128)
    monkeypatch.setattr(launch, "HOPPER_FWD_STAGES", 2)
    assert launch._fwd_stages(128, 2) == 2
    monkeypatch.setattr(launch, "HOPPER_FWD_STAGES", 4)
    with pytest.raises(ValueError, match="HOPPER_FWD_STAGES=4 .* past 227 KiB"):
        launch._fwd_stages(128, 2)
    assert launch._fwd_stages(64, 3) == 4
    for bad in (1, True, 2.0, "3"):
        monkeypatch.setattr(launch, "HOPPER_FWD_STAGES", bad)
        with pytest.raises(ValueError, match="HOPPER_FWD_STAGES must be None or an int >= 2"):
            launch._fwd_stages(64, 2)
    # two Q buffers fit beside 2 slots at d=128, not beside 3
    monkeypatch.setattr(launch, "HOPPER_FWD_STAGES", None)
    with pytest.raises(ValueError, match="a ring of 3.* with 2 Q buffers .* past 227 KiB"):
        launch._fwd_stages(128, 2, 2)
    assert launch._fwd_stages(64, 3, 2) == 4
    monkeypatch.setattr(launch, "HOPPER_FWD_Q_BUFFERS", 2)
    assert launch._q_buffers(False) == 2
    for bad in (0, 3, True, 2.0):
        monkeypatch.setattr(launch, "HOPPER_FWD_Q_BUFFERS", bad)
        with pytest.raises(ValueError, match="HOPPER_FWD_Q_BUFFERS must be None, 1 or 2"):
            launch._q_buffers(True)


@pytest.mark.parametrize("d,flags", [
    (128, dict(CAUSAL=True, OUT_TMA=True, OVERLAP_PV=True, RESCALE=8.0, PERSISTENT=True)),
    (64, dict(NUM_CONSUMERS=3, PERSISTENT=True, DYNAMIC=True, CAUSAL=True)),
], ids=["d128-persistent", "d64-three-consumers"])
def test_split_release_compiles_without_spills(d, flags):
    """The forward with a K/V slot released in two halves (``KV_SPLIT``) compiles to sm_90
    with no spills and one more barrier arrive a step (its loop grows by a few
    instructions, not more); with two Q buffers (``Q_BUFS``) too, whose second Q tiles take
    the shared memory they need and no more (at d=128 beside the default 2-stage ring)."""
    if d == 128:
        flags = dict(flags, NUM_STAGES=2)            # where two Q buffers fit
    base = _sass_counts("fwd", d, "bf16", dict(flags, KV_SPLIT=False))
    split = _sass_counts("fwd", d, "bf16", dict(flags, KV_SPLIT=True))
    assert split["STL"] == 0 and base["STL"] == 0
    assert split["HGMMA"] == base["HGMMA"]
    assert base["STEP_LOOP"] < split["STEP_LOOP"] <= base["STEP_LOOP"] + 12
    two = _sass_counts("fwd", d, "bf16", dict(flags, KV_SPLIT=True, Q_BUFS=2, DYNAMIC=True))
    assert two["STL"] == 0 and two["STEP_LOOP"] <= base["STEP_LOOP"] + 12
    q_bytes = 3 * 64 * d * 2 if d == 64 else 2 * 64 * d * 2        # a second Q per consumer
    assert q_bytes <= two["SHARED"] - split["SHARED"] <= q_bytes + 256


@gpu
@pytest.mark.parametrize("d,stages,consumers,persistent,causal,n,qbufs,dynamic", [
    (128, 3, 2, False, True, 4000, 1, None), (128, 2, 2, False, True, 4000, 1, None),
    (128, 2, 2, 5, False, 1000, 1, None), (128, 2, 2, 5, True, 4000, 2, False),
    (128, 2, 2, 7, True, 4000, 2, True), (128, 2, 2, True, False, 1000, 2, True),
    (64, 4, 3, None, True, 4000, 1, None), (64, 4, 3, 5, True, 4000, 2, True),
    (64, 3, 2, False, False, 2600, 1, None), (64, 3, 2, 3, False, 2600, 2, False),
], ids=["d128-3-stages", "d128-2-stages", "d128-2-stages-persistent-1000",
        "d128-two-q-persistent-5", "d128-two-q-persistent-7-dynamic", "d128-two-q-every-sm-1000",
        "d64-three-consumers", "d64-three-consumers-two-q", "d64-3-stages-2600",
        "d64-3-stages-two-q-persistent-3"])
def test_hopper_split_release_equals_joint(d, stages, consumers, persistent, causal, n, qbufs,
                                           dynamic, hopper_only, monkeypatch):
    """The forward with K and V released separately (``launch.HOPPER_FWD_KV_SPLIT``), any
    ring depth (``HOPPER_FWD_STAGES``) and one or two Q buffers (``HOPPER_FWD_Q_BUFFERS``,
    used in turn by a persistent CTA's tiles) gives bit for bit the outputs and LSE of the
    default ring: lengths not multiples of the tile, GQA, a batch of 2, causal and not, one
    CTA per tile and persistent with fixed and run-time tiles (5 and 7 CTAs: many tiles each,
    both buffers reused), two and three consumers (whose shorter rows release skipped
    steps)."""
    g = torch.Generator(device="cuda").manual_seed(3)
    q = torch.randn(2, 4, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(2, 2, n, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    pattern = sf.local(3) | sf.global_blocks(1) if consumers == 2 else sf.dense()
    monkeypatch.setattr(launch, "HOPPER_FWD_CONSUMERS", consumers)
    results = []
    for split, depth, q_buffers, ctas, handout in ((False, None, None, False, None),
                                                   (True, stages, qbufs, persistent, dynamic)):
        monkeypatch.setattr(launch, "HOPPER_FWD_KV_SPLIT", split)
        monkeypatch.setattr(launch, "HOPPER_FWD_STAGES", depth)
        monkeypatch.setattr(launch, "HOPPER_FWD_Q_BUFFERS", q_buffers)
        monkeypatch.setattr(launch, "HOPPER_PERSISTENT", ctas)
        monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", handout)
        results.append(sf.sparse_attention(q, k, v, pattern, block_size=128, causal=causal,
                                           return_lse=True))
    (out, lse), (out_split, lse_split) = results
    assert torch.isfinite(out_split).all()
    assert torch.equal(out, out_split) and torch.equal(lse, lse_split)


def _assert_same_results(got, ref, *where):
    """(out, lse, dq, dk, dv) of two runs that must compute the same: equal bit for bit, dQ within
    1% of its largest entry (the fused dQ adds with atomics, in whatever order they land)."""
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), got, ref):
        if name == "dq":
            assert (a.float() - b.float()).abs().max() <= 1e-2 * b.float().abs().max(), (*where, name)
        else:
            assert torch.equal(a, b), (*where, name)


def _runs_by_setting(monkeypatch, name, values, d, seed, pattern, causal, dropout_p, softcap):
    """One run of ``sparse_attention`` for each value of ``launch.<name>`` on the same inputs
    (GQA, bf16: q [2, 4, 1500, d], k and v [2, 2, 1700, d] from ``seed``), the dropout seeded
    alike: (out, lse, dq, dk, dv) a run."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(2, 4, 1500, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(2, 2, 1700, d, device="cuda", dtype=torch.bfloat16, generator=g)
            for _ in range(2))
    do = torch.randn_like(q)
    results = []
    for value in values:
        monkeypatch.setattr(launch, name, value)
        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
        torch.manual_seed(5)
        out, lse = sf.sparse_attention(qg, kg, vg, pattern, block_size=128, causal=causal,
                                       dropout_p=dropout_p, softcap=softcap, return_lse=True)
        results.append((out, lse) + torch.autograd.grad(out, (qg, kg, vg), do))
    return results


@gpu
@pytest.mark.parametrize("d,consumers,persistent,dynamic,causal,dropout_p,softcap", [
    (128, 2, False, False, True, 0.0, 0.0), (128, 2, True, True, False, 0.0, 0.0),
    (128, 2, True, True, True, 0.2, 0.0), (128, 2, True, False, True, 0.0, 30.0),
    (64, 2, True, True, True, 0.0, 0.0), (64, 3, True, True, True, 0.2, 0.0),
    (64, 3, False, False, False, 0.0, 0.0)],
    ids=["d128-causal", "d128-dynamic", "d128-dropout", "d128-softcap", "d64", "d64-three-dropout",
         "d64-three-one-cta"])
def test_hopper_release_by_every_thread_is_bit_identical(d, consumers, persistent, dynamic, causal,
                                                         dropout_p, softcap, hopper_only, monkeypatch):
    """``launch.HOPPER_RELEASE_ALL``: the consumers' every-thread releases of ring slots change
    when the producer may refill a slot, not what any product computes, so the outputs, LSE,
    dK and dV equal bit for bit those of one thread's releases (dQ within rounding: the fused dQ
    adds with atomics): GQA with kv_len > seq_len, lengths not multiples of the tile, two and
    three consumers, one CTA per tile and persistent CTAs with fixed and run-time tiles (5 CTAs:
    many tiles each), dropout and softcap."""
    pattern = sf.local(3) | sf.global_blocks(1) if consumers == 2 else sf.dense()
    monkeypatch.setattr(launch, "HOPPER_FWD_CONSUMERS", consumers)
    monkeypatch.setattr(launch, "HOPPER_PERSISTENT", 5 if persistent else False)
    monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", dynamic)
    ref, got = _runs_by_setting(monkeypatch, "HOPPER_RELEASE_ALL", (None, True), d, 11, pattern,
                                causal, dropout_p, softcap)
    assert torch.isfinite(got[0]).all() and torch.isfinite(got[2]).all()
    _assert_same_results(got, ref)


@gpu
@pytest.mark.parametrize("d,causal,dropout_p,softcap,dense", [
    (128, True, 0.0, 0.0, False), (128, True, 0.2, 0.0, True), (128, True, 0.0, 30.0, False),
    (128, False, 0.0, 0.0, False), (64, True, 0.0, 0.0, True), (64, True, 0.2, 20.0, False)],
    ids=["d128-causal-local", "d128-causal-dropout-dense", "d128-causal-softcap-local",
         "d128-local", "d64-causal", "d64-causal-dropout-softcap-local"])
def test_hopper_backward_split_loops_are_bit_identical(d, causal, dropout_p, softcap, dense,
                                                       hopper_only, monkeypatch):
    """``launch.HOPPER_BWD_SPLIT_LOOPS`` (None: on with the softcap alone): a column's full and
    masked steps in two loops run the same steps in the same order with the same masking, so the
    outputs, LSE, dK and dV equal bit for bit those of the one loop (dQ within rounding: the fused dQ adds with atomics): GQA with
    kv_len > seq_len, lengths not multiples of the tile (masked rows and keys in the last
    blocks), d=128 (64-query steps) and d=64 (128-query steps), causal and not, dense and
    local|global, dropout and softcap."""
    pattern = sf.dense() if dense else sf.local(3) | sf.global_blocks(1)
    ref, got = _runs_by_setting(monkeypatch, "HOPPER_BWD_SPLIT_LOOPS", (False, True), d, 29, pattern,
                                causal, dropout_p, softcap)
    assert all(torch.isfinite(t).all() for t in got)
    _assert_same_results(got, ref)


@gpu
@pytest.mark.parametrize("name,pattern,kw", CASES, ids=[c[0] for c in CASES])
def test_hopper_split_release_two_stages_matches_the_oracle(name, pattern, kw, hopper_only,
                                                            monkeypatch):
    """The forward on a 2-stage ring with K and V released separately and two Q buffers,
    persistent on 3 CTAs with run-time tiles, on every layout of the oracle cases, forward and
    gradients against float64."""
    monkeypatch.setattr(launch, "HOPPER_FWD_KV_SPLIT", True)
    monkeypatch.setattr(launch, "HOPPER_FWD_STAGES", 2)
    monkeypatch.setattr(launch, "HOPPER_FWD_Q_BUFFERS", 2)
    monkeypatch.setattr(launch, "HOPPER_PERSISTENT", 3)
    monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", True)
    kw = dict(kw)
    kw.setdefault("d", 128)
    check(pattern, bs=128, dtype=torch.bfloat16, backend="triton", **kw)


@gpu
@pytest.mark.parametrize("consumers,persistent,dynamic,causal,n", [
    (2, False, False, True, 4000), (2, True, False, True, 4000), (2, 5, True, True, 4000),
    (2, False, False, False, 1000), (3, None, None, True, 4000), (3, False, False, False, 1300),
], ids=["two-one-cta-per-tile", "two-persistent", "two-persistent-5-dynamic", "two-noncausal-1000",
        "three-default", "three-one-cta-per-tile-1300"])
def test_hopper_output_copy_equals_register_stores(consumers, persistent, dynamic, causal, n,
                                                   hopper_only, monkeypatch):
    """The output through shared memory and a bulk copy (``launch.HOPPER_FWD_OUT_TMA``) gives
    bit for bit the outputs and LSE of the register stores: lengths that end inside a
    warpgroup's 64 rows (those blocks keep the masked stores), GQA, a batch of 2, causal and
    not, one CTA per tile and persistent (where the Q slot is released after the copy)."""
    d = 128 if consumers == 2 else 64
    g = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(2, 4, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(2, 2, n, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    pattern = sf.local(3) | sf.global_blocks(1) if consumers == 2 else sf.dense()
    monkeypatch.setattr(launch, "HOPPER_FWD_CONSUMERS", consumers)
    monkeypatch.setattr(launch, "HOPPER_PERSISTENT", persistent)
    monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", dynamic)
    results = []
    for copy in (True, False):
        monkeypatch.setattr(launch, "HOPPER_FWD_OUT_TMA", copy)
        results.append(sf.sparse_attention(q, k, v, pattern, block_size=128, causal=causal,
                                           return_lse=True))
    (out, lse), (out_reg, lse_reg) = results
    assert torch.isfinite(out).all()
    assert torch.equal(out, out_reg) and torch.equal(lse, lse_reg)


@gpu
@pytest.mark.parametrize("d,n,pattern,causal,option", [
    (128, 4000, "local-global", True, None), (128, 1000, "local-global", False, None),
    (64, 4000, "local-global", True, None), (64, 2600, "dense", False, None),
    (128, 4000, "local-global", True, "alibi"), (64, 2600, "dense", True, "alibi"),
    (128, 4000, "local-global", True, "softcap"),
], ids=["d128-causal-4000", "d128-1000", "d64-causal-4000", "d64-dense-2600",
        "d128-causal-4000-alibi", "d64-dense-causal-2600-alibi", "d128-causal-4000-softcap"])
@pytest.mark.parametrize("reload", [False, True], ids=["held", "reloaded"])
def test_hopper_dkdv_output_copy_equals_register_stores(d, n, pattern, causal, option, reload, hopper_only,
                                                        monkeypatch):
    """dK and dV through shared memory and bulk copies (``launch.HOPPER_BWD_OUT_TMA``) equal
    the register stores bit for bit (dQ: to the fp32 adds' order), with lengths that end
    inside a consumer's 64 keys (those blocks keep the masked stores), GQA and a batch of 2;
    and with the causal ALiBi, whose row term is folded into lse2 by default (stop 65: the
    copy's loops no longer spill with it; taken by default at d=128 since this test passed on
    an H100 in stop 66); with the softcap; and with the tile's coordinates found again after the
    step loops (``launch.HOPPER_BWD_OUT_RELOAD``, the default since stop 69) and held across
    them."""
    monkeypatch.setattr(launch, "HOPPER_BWD_OUT_RELOAD", reload)
    g = torch.Generator(device="cuda").manual_seed(2)
    q = torch.randn(2, 4, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(2, 2, n, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    do = torch.randn(2, 4, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    pat = sf.local(3) | sf.global_blocks(1) if pattern == "local-global" else sf.dense()
    kw = {}
    if option == "softcap":
        kw["softcap"] = 20.0
    elif option == "alibi":
        kw["alibi_slopes"] = torch.rand(2, 4, device="cuda", generator=g) * 0.1
    grads = []
    for copy in (True, False):
        monkeypatch.setattr(launch, "HOPPER_BWD_OUT_TMA", copy)
        leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
        out = sf.sparse_attention(*leaves, pat, block_size=128, causal=causal, **kw)
        grads.append(torch.autograd.grad(out, leaves, do))
    (dq, dk, dv), (dq_reg, dk_reg, dv_reg) = grads
    assert torch.isfinite(dk).all() and torch.isfinite(dv).all()
    assert torch.equal(dk, dk_reg) and torch.equal(dv, dv_reg)
    assert (dq.float() - dq_reg.float()).abs().max() <= 1e-2 * dq_reg.float().abs().max()


@gpu
@pytest.mark.parametrize("copy", [True, False], ids=["dkdv-output-copy", "dkdv-register-stores"])
@pytest.mark.parametrize("name,pattern,kw", CASES, ids=[c[0] for c in CASES])
def test_hopper_dkdv_stores_match_the_oracle(name, pattern, kw, copy, hopper_only, monkeypatch):
    """The dK/dV kernel with either store (``HOPPER_BWD_OUT_TMA`` forced) on every layout of
    the oracle cases, forward and gradients against float64."""
    monkeypatch.setattr(launch, "HOPPER_BWD_OUT_TMA", copy)
    kw = dict(kw)
    kw.setdefault("d", 128)
    check(pattern, bs=128, dtype=torch.bfloat16, backend="triton", **kw)


@gpu
@pytest.mark.parametrize("name,pattern,kw", CASES, ids=[c[0] for c in CASES])
def test_hopper_forward_register_stores_match_the_oracle(name, pattern, kw, hopper_only, monkeypatch):
    """The register-store epilogue (``HOPPER_FWD_OUT_TMA=False``, no longer the default with
    two consumers) on every layout of the oracle cases."""
    monkeypatch.setattr(launch, "HOPPER_FWD_OUT_TMA", False)
    kw = dict(kw)
    kw.setdefault("d", 128)
    check(pattern, bs=128, dtype=torch.bfloat16, backend="triton", **kw)


THREE_CASES = [
    # (name, pattern, kwargs for check): tables whose rows are prefixes of the next
    ("dense-causal-1000", sf.dense(), dict(q_lens=[1000], causal=True)),
    ("dense-kv-longer", sf.dense(), dict(q_lens=[300], k_lens=[1000], causal=True)),
    ("dense-kv-longer-700", sf.dense(), dict(q_lens=[700], k_lens=[900], causal=True)),
    ("dense-batch-2", sf.dense(), dict(q_lens=[1300], B=2)),
    ("gqa-causal", sf.dense(), dict(q_lens=[700], H=4, Hkv=2, causal=True)),
    ("one-query", sf.dense(), dict(q_lens=[1], k_lens=[500], causal=True)),
    ("causal-130", sf.dense(), dict(q_lens=[130], causal=True)),
]


@gpu
@pytest.mark.parametrize("persistent,dynamic,out_tma", [(False, False, None), (3, False, None), (3, True, None),
                                                        (3, True, True)],
                         ids=["one-cta-per-tile", "persistent-3", "persistent-3-dynamic",
                              "persistent-3-dynamic-output-copy"])
@pytest.mark.parametrize("name,pattern,kw", THREE_CASES, ids=[c[0] for c in THREE_CASES])
def test_hopper_three_consumer_forward_matches_the_oracle(name, pattern, kw, persistent, dynamic,
                                                          out_tma, hopper_only, monkeypatch):
    """The 192-query forward (three consumer warpgroups, ``launch.HOPPER_FWD_CONSUMERS=3``)
    against the float64 oracle at d=64: lengths not multiples of 192, kv_len > seq_len (the
    first tile's thirds before the sequence start), GQA, batches, and persistent CTAs; also
    with the output through shared memory and a bulk copy (``HOPPER_FWD_OUT_TMA``)."""
    monkeypatch.setattr(launch, "HOPPER_FWD_OUT_TMA", out_tma)
    monkeypatch.setattr(launch, "HOPPER_FWD_CONSUMERS", 3)
    monkeypatch.setattr(launch, "HOPPER_PERSISTENT", persistent)
    monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", dynamic)
    check(pattern, bs=128, dtype=torch.bfloat16, backend="triton", d=64, **kw)


@gpu
@pytest.mark.parametrize("mapping,bits", [("mma", 16), ("mma", 8), ("quad", 16), ("quad", 8)])
def test_hopper_dropout_forms_are_bit_identical(mapping, bits, hopper_only, monkeypatch):
    """Every ``launch.HOPPER_DROPOUT_FORM`` draws the same mask: Philox by ``mul.wide.u32``
    (bit 0), the forward's explicit select (bit 1), the dK/dV kernel's draws made before its
    wait for S^T (bit 2, 16-bit quad only) give bit for bit form 0's output, LSE,
    dK and dV (dQ: within rounding, the fused dQ adds with atomics), on a causal GQA layout
    with kv_len > seq_len, 16- and 8-bit draws in both mappings, d=128 and d=64; bit 5 (dV's
    operand by cvt.rn.relu, dS^T's select in PTX) too. Bit 4 (dS^T by
    a select) rounds dS^T once where form 0 rounds twice: with it the other bits give form 16's
    results bit for bit, and form 16 gives form 0's output, LSE and dV bit for bit and its dK and
    dQ within rounding."""
    from sparseflash import philox

    monkeypatch.setattr(philox, "DROPOUT_MAPPING", mapping)
    monkeypatch.setattr(philox, "DROPOUT_BITS", bits)
    g = torch.Generator(device="cuda").manual_seed(0)
    for d in (128, 64):
        q = torch.randn(2, 4, 900, d, device="cuda", dtype=torch.bfloat16, generator=g)
        k, v = (torch.randn(2, 2, 1100, d, device="cuda", dtype=torch.bfloat16, generator=g)
                for _ in range(2))
        do = torch.randn_like(q)
        results = []
        # bit 4 changes dK and dQ's rounding: the forms with it are compared among themselves
        forms = (0, 1, 2, 3, 7, 16, 19, 23, 51)
        for form in forms:
            monkeypatch.setattr(launch, "HOPPER_DROPOUT_FORM", form)
            qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
            torch.manual_seed(7)
            out, lse = sf.sparse_attention(qg, kg, vg, sf.local(2) | sf.global_blocks(1),
                                           block_size=128, causal=True, dropout_p=0.2,
                                           return_lse=True)
            results.append((out, lse) + torch.autograd.grad(out, (qg, kg, vg), do))
        ref, ref4 = results[0], results[forms.index(16)]
        assert torch.isfinite(ref[0]).all() and (ref[0] != 0).any()
        for form, got in zip(forms[1:], results[1:]):
            if got is not ref4:                       # form 16 is the reference of its group
                _assert_same_results(got, ref4 if form & 16 else ref, form, d)
        # bit 4 moves dK and dQ by rounding only (its output, LSE and dV are form 0's)
        for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), ref4, ref):
            if name in ("dq", "dk"):
                assert (a.float() - b.float()).abs().max() <= 1e-2 * b.float().abs().max(), (d, name)
            else:
                assert torch.equal(a, b), (d, name)


@gpu
@pytest.mark.parametrize("dropout_p,softcap", [(0.0, 0.0), (0.2, 0.0), (0.0, 2.0), (0.0, 30.0)],
                         ids=["plain", "dropout", "softcap-2", "softcap-30"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_hopper_three_consumers_equal_two(dropout_p, softcap, causal, hopper_only, monkeypatch):
    """A query row's arithmetic does not depend on how many warpgroups share its tile: each
    warpgroup walks its own row's blocks in the table's order with the same 64-row products,
    so three consumers give bit for bit the outputs and LSE of two, with and without dropout
    (the same seed draws the same mask) and softcap (running max, the d=64 default, and the
    fixed shift), here with kv_len > seq_len (2000 queries against 2500 keys, bottom-right
    aligned)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(2, 4, 2000, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(2, 4, 2500, 64, device="cuda", dtype=torch.bfloat16, generator=g)
            for _ in range(2))
    kw = dict(softcap=softcap) if softcap else {}
    shifts = (None, True) if softcap else (None,)
    results = []
    for shift in shifts:
        monkeypatch.setattr(launch, "HOPPER_SOFTCAP_SHIFT", shift)
        for consumers in (2, 3):
            monkeypatch.setattr(launch, "HOPPER_FWD_CONSUMERS", consumers)
            torch.manual_seed(7)
            results.append(sf.sparse_attention(q, k, v, sf.dense(), block_size=128, causal=causal,
                                               dropout_p=dropout_p, return_lse=True, **kw))
    if softcap:
        # the two softmax forms differ by rounding only
        assert (results[0][0].float() - results[2][0].float()).abs().max() < 2e-2
        assert torch.equal(results[2][0], results[3][0])
        assert torch.equal(results[2][1], results[3][1])
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert torch.isfinite(results[0][0]).all()


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
def test_portable_fallbacks_still_run_under_auto(monkeypatch):
    """With the default dispatch, calls the Hopper kernel does not cover (d=80, block 64,
    dropout in the "interleave" mapping) run the portable kernel instead of failing."""
    q = torch.randn(1, 2, 512, 80, device="cuda", dtype=torch.bfloat16)
    out = sf.sparse_attention(q, q, q, sf.local(1), block_size=64, causal=True)
    assert out.shape == q.shape and not torch.isnan(out).any()
    from sparseflash import philox

    monkeypatch.setattr(philox, "DROPOUT_MAPPING", "interleave")
    q = torch.randn(1, 2, 512, 128, device="cuda", dtype=torch.bfloat16)
    out = sf.sparse_attention(q, q, q, sf.local(1), block_size=128, dropout_p=0.1)
    assert not torch.isnan(out).any()


# ------------------------------------------------------------------ softcap and ALiBi, on a Hopper GPU
def _run(q, k, v, do, pattern, causal, kw):
    out, lse = sf.sparse_attention(q, k, v, pattern, block_size=128, causal=causal,
                                   return_lse=True, **kw)
    return (out, lse, *torch.autograd.grad(out, (q, k, v), do))


RESCALE_CASES = [
    # (name, pattern, N, d, causal, dtype, softcap)
    ("dense-d128-bf16", sf.dense(), 1500, 128, False, torch.bfloat16, 0.0),
    ("local-global-causal-d64-fp16", sf.local(3) | sf.global_blocks(1), 1400, 64, True,
     torch.float16, 0.0),
    ("dense-causal-softcap-d128", sf.dense(), 1100, 128, True, torch.bfloat16, 20.0),
]


@gpu
@pytest.mark.parametrize("name,pattern,N,d,causal,dtype,softcap", RESCALE_CASES,
                         ids=[c[0] for c in RESCALE_CASES])
def test_hopper_conditional_rescale_on_rows_whose_max_grows(name, pattern, N, d, causal, dtype,
                                                           softcap, hopper_only, monkeypatch):
    """Keys scaled by a ramp (0.2 at the first key, 6 at the last), so that a row's max grows
    by ~20 powers of two along the row and the forward's stale max (``HOPPER_FWD_RESCALE``)
    must move several times mid-row: at thresholds 8 and 15 the output, LSE
    and every gradient stay within twice the error of the kernel that rescales at every step
    (threshold 0) against the float64 oracle, plus the dtype's floor; nothing is NaN."""
    from sparseflash.reference import reference_attention, token_mask

    g = torch.Generator(device="cuda").manual_seed(1)
    ramp = torch.linspace(0.2, 6.0, N, device="cuda")[None, None, :, None]
    q = torch.randn(1, 2, N, d, device="cuda", generator=g).to(dtype).requires_grad_(True)
    k = (torch.randn(1, 2, N, d, device="cuda", generator=g) * ramp).to(dtype).requires_grad_(True)
    v = torch.randn(1, 2, N, d, device="cuda", generator=g).to(dtype).requires_grad_(True)
    do = torch.randn(1, 2, N, d, device="cuda", generator=g).to(dtype)
    kw = dict(softcap=softcap) if softcap else {}
    results = {}
    for threshold in (0.0, 8.0, 15.0):
        monkeypatch.setattr(launch, "HOPPER_FWD_RESCALE", threshold)
        results[threshold] = _run(q, k, v, do, pattern, causal, kw)
    layout = sf.compile(pattern, N, block_size=128, causal=causal, num_heads=2)
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref, ref_lse = reference_attention(q64, k64, v64, layout, mask=token_mask(layout, 1),
                                       softcap=softcap)
    refs = (ref, ref_lse, *torch.autograd.grad(ref, (q64, k64, v64), do.double()))
    floor = {torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]
    for i, name_ in enumerate(("out", "lse", "dq", "dk", "dv")):
        base = (results[0.0][i].double() - refs[i]).abs().max().item()
        for threshold in (8.0, 15.0):
            got = results[threshold][i]
            assert not torch.isnan(got).any(), f"{name_} at {threshold}: NaN"
            err = (got.double() - refs[i]).abs().max().item()
            scale_ = refs[i].abs().max().item()
            assert err <= 2 * base + floor * max(scale_, 1.0) * 0.1, (name_, threshold, err, base)


MOD_CASES = [
    # (name, pattern, shape kwargs, causal, modifiers, launch variants)
    ("softcap-folded-causal-gqa", sf.local(2) | sf.global_blocks(1),
     dict(B=1, H=4, Hkv=2, N=1000, Nk=1000, d=128), True, dict(softcap=1.0), {}),
    ("softcap-plain-noncausal-d64", sf.bigbird(window=1, globals=1, random=2),
     dict(B=1, H=2, Hkv=1, N=700, Nk=700, d=64), False, dict(softcap=1.0),
     dict(SOFTCAP_VARIANT="plain")),
    ("alibi-heads-causal-kv-longer", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=300, Nk=1000, d=128), True, dict(alibi="heads"), {}),
    ("alibi-batch-noncausal-gqa", sf.local(2) | sf.global_blocks(1),
     dict(B=2, H=4, Hkv=1, N=700, Nk=700, d=128), False, dict(alibi="batch"), {}),
    ("alibi-abs-causal", sf.local(1) | sf.global_blocks(1),
     dict(B=1, H=4, Hkv=4, N=900, Nk=900, d=64), True, dict(alibi="heads"),
     dict(ALIBI_VARIANT="abs")),
    ("softcap-alibi-batch-causal-kv-longer", sf.bigbird(window=1, globals=1, random=2),
     dict(B=2, H=4, Hkv=2, N=500, Nk=1100, d=128), True, dict(softcap=2.0, alibi="batch"), {}),
    ("softcap-folded-causal-d64-three-consumers", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=1000, Nk=1200, d=64), True, dict(softcap=1.0),
     dict(HOPPER_FWD_CONSUMERS=3)),
    ("softcap-alibi-window", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=1100, Nk=1100, d=64), True, dict(softcap=2.0, alibi="heads"),
     dict(window=(300, 0))),
    # the causal ALiBi's row term not folded into the stored lse2 (launch.HOPPER_BWD_ALIBI_FOLD
    # off; the cases above fold it by default, with K/V in registers at d=64): keys longer than
    # queries (positions offset by 700, 60 mod 64) with GQA at d=128, and with the softcap and
    # (B, H) slopes at d=128 and d=64
    ("alibi-heads-causal-kv-longer-unfolded", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=300, Nk=1000, d=128), True, dict(alibi="heads"),
     dict(HOPPER_BWD_ALIBI_FOLD=False)),
    ("softcap-alibi-batch-causal-kv-longer-unfolded", sf.bigbird(window=1, globals=1, random=2),
     dict(B=2, H=4, Hkv=2, N=500, Nk=1100, d=128), True, dict(softcap=2.0, alibi="batch"),
     dict(HOPPER_BWD_ALIBI_FOLD=False)),
    ("softcap-alibi-window-unfolded", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=1100, Nk=1100, d=64), True, dict(softcap=2.0, alibi="heads"),
     dict(window=(300, 0), HOPPER_BWD_ALIBI_FOLD=False)),
    # the abs form in raw-score units in the forward (launch.HOPPER_FWD_ALIBI_RAW, with the split
    # by sides off): non-causal (B, H) slopes with GQA at d=128; slopes of both signs, causal with ALIBI_VARIANT "abs",
    # at d=64 and keys longer than queries
    ("alibi-batch-noncausal-gqa-raw", sf.local(2) | sf.global_blocks(1),
     dict(B=2, H=4, Hkv=1, N=700, Nk=700, d=128), False, dict(alibi="batch"),
     dict(HOPPER_FWD_ALIBI_RAW=True, HOPPER_FWD_ALIBI_SIDES=False)),
    ("alibi-signed-abs-causal-d64-raw", sf.local(1) | sf.global_blocks(1),
     dict(B=1, H=4, Hkv=4, N=900, Nk=1000, d=64), True, dict(alibi="signed"),
     dict(ALIBI_VARIANT="abs", HOPPER_FWD_ALIBI_RAW=True,
          HOPPER_FWD_ALIBI_SIDES=False)),
    ("alibi-signed-noncausal-raw", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=500, Nk=500, d=128), False, dict(alibi="signed"),
     dict(HOPPER_FWD_ALIBI_RAW=True, HOPPER_FWD_ALIBI_SIDES=False)),
    # the abs form split by the sides of the diagonal in the forward (launch.
    # HOPPER_FWD_ALIBI_SIDES): non-causal (B, H) slopes with GQA at d=128; slopes of both signs
    # non-causal at d=64 with keys longer than queries (positions offset by 500: steps across
    # the diagonal that do not start at it) and causal with ALIBI_VARIANT "abs" at d=128; three
    # consumers at d=64 (the default since stop 66: the other non-causal cases take it too);
    # then the unsplit abs form (the split off), slopes of both signs, keys longer than queries
    ("alibi-batch-noncausal-gqa-sides", sf.local(2) | sf.global_blocks(1),
     dict(B=2, H=4, Hkv=1, N=700, Nk=700, d=128), False, dict(alibi="batch"),
     dict(HOPPER_FWD_ALIBI_SIDES=True)),
    ("alibi-signed-noncausal-kv-longer-d64-sides", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=500, Nk=1000, d=64), False, dict(alibi="signed"),
     dict(HOPPER_FWD_ALIBI_SIDES=True)),
    ("alibi-signed-abs-causal-sides", sf.local(1) | sf.global_blocks(1),
     dict(B=1, H=4, Hkv=4, N=900, Nk=1000, d=128), True, dict(alibi="signed"),
     dict(ALIBI_VARIANT="abs", HOPPER_FWD_ALIBI_SIDES=True)),
    ("alibi-heads-noncausal-d64-three-consumers-sides", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=1000, Nk=1000, d=64), False, dict(alibi="heads"),
     dict(HOPPER_FWD_CONSUMERS=3, HOPPER_FWD_ALIBI_SIDES=True)),
    ("alibi-signed-noncausal-unsplit", sf.local(2) | sf.global_blocks(1),
     dict(B=1, H=4, Hkv=2, N=700, Nk=900, d=128), False, dict(alibi="signed"),
     dict(HOPPER_FWD_ALIBI_SIDES=False)),
]


@gpu
@pytest.mark.parametrize("name,pattern,shape,causal,mods,variants", MOD_CASES,
                         ids=[c[0] for c in MOD_CASES])
def test_hopper_softcap_and_alibi_match_the_oracle(name, pattern, shape, causal, mods, variants,
                                                   monkeypatch):
    """Forward, LSE and every gradient with softcap and/or ALiBi through the Hopper kernels
    (forced on: they raise rather than fall back) against the float64 oracle: within twice the
    portable kernels' own error on the same inputs (the same formulation, so the same
    rounding, tanh.approx included) plus the dtype's floor; and the modifier changes the
    result (the test can fail)."""
    B, H, Hkv, N, Nk, d = (shape[x] for x in ("B", "H", "Hkv", "N", "Nk", "d"))
    dtype = torch.float16 if d == 64 else torch.bfloat16          # both dtypes, few compiles
    variants = dict(variants)
    window = variants.pop("window", None)
    for attr, value in variants.items():
        monkeypatch.setattr(launch, attr, value)
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, H, N, d, device="cuda", dtype=dtype, generator=g).requires_grad_(True)
    k = torch.randn(B, Hkv, Nk, d, device="cuda", dtype=dtype, generator=g).requires_grad_(True)
    v = torch.randn(B, Hkv, Nk, d, device="cuda", dtype=dtype, generator=g).requires_grad_(True)
    do = torch.randn(B, H, N, d, device="cuda", dtype=dtype, generator=g)
    kw = dict(window_size=window)
    if "softcap" in mods:
        kw["softcap"] = mods["softcap"]          # small: the cap is active on these scores
    if mods.get("alibi") == "heads":
        kw["alibi_slopes"] = torch.tensor([2.0 ** -(2 * h + 1) for h in range(H)], device="cuda")
    elif mods.get("alibi") == "batch":
        kw["alibi_slopes"] = torch.rand(B, H, device="cuda", generator=g) * 0.5
    elif mods.get("alibi") == "signed":        # legal, if unusual: a bias that grows with distance
        kw["alibi_slopes"] = torch.tensor([0.25, -0.03, 0.0, -0.5][:H], device="cuda")

    monkeypatch.setattr(launch, "USE_HOPPER", True)
    monkeypatch.setattr(launch, "USE_HOPPER_BWD", True)
    got = _run(q, k, v, do, pattern, causal, kw)
    monkeypatch.setattr(launch, "USE_HOPPER", False)
    monkeypatch.setattr(launch, "USE_HOPPER_BWD", False)
    portable = _run(q, k, v, do, pattern, causal, kw)
    plain = sf.sparse_attention(q, k, v, pattern, block_size=128, causal=causal, window_size=window)

    layout = sf.compile(pattern, N, kv_len=Nk, block_size=128, causal=causal, num_heads=H,
                        window_size=window)
    from sparseflash.reference import reference_attention, token_mask

    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref, ref_lse = reference_attention(
        q64, k64, v64, layout, mask=token_mask(layout, B), positions=positions(N, Nk),
        softcap=kw.get("softcap", 0.0), alibi_slopes=kw.get("alibi_slopes"))
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
    finite = ~torch.isinf(ref_lse)
    assert torch.equal(torch.isinf(got[1]), ~finite), "rows that see nothing"
    floor = {torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]
    names = ("out", "lse", "dq", "dk", "dv")
    refs = (ref, ref_lse, *ref_grads)
    errors = {}
    for name, h, p, r in zip(names, got, portable, refs):
        assert not torch.isnan(h).any(), f"{name}: NaN"
        sel = finite if name == "lse" else torch.ones_like(r, dtype=torch.bool)
        e_h = errors[name] = (h.double() - r)[sel].abs().max().item()
        e_p = (p.double() - r)[sel].abs().max().item()
        assert e_h <= 2 * e_p + (1e-4 if name == "lse" else floor), \
            f"{name}: Hopper error {e_h:.2e} vs portable {e_p:.2e}"
    # the modifier moves the output well beyond the Hopper kernel's error (a kernel that
    # ignored it would fail here)
    effect = (plain.double() - ref).abs().max().item()
    assert effect > 4 * errors["out"], f"modifier effect {effect:.2e} vs error {errors['out']:.2e}"


def test_softcap_fixed_shift_applies_where_its_exponentials_stay_normal(monkeypatch):
    """``launch._hopper_softcap``: the Hopper forward's fixed shift (HAS_SOFTCAP + 10) only for
    the folded softcap, bfloat16, no ALiBi and a cap whose log2 scores span at most 180
    (softcap <= 62.38); by default at d=128 only, at any head dim when forced; the switch turns
    it off and refuses anything but None/True/False."""
    import math

    bf16, fp16 = torch.bfloat16, torch.float16
    edge = launch._SOFTCAP_SHIFT_SPAN / (2 * launch._LOG2E)
    assert 62.3 < edge < 62.4
    assert launch._hopper_softcap(2, 30.0, 0, bf16, 128) == 12
    assert launch._hopper_softcap(2, 50.0, 0, bf16, 128) == 12          # Gemma-2's attention cap
    assert launch._hopper_softcap(2, math.nextafter(edge, 0), 0, bf16, 128) == 12
    assert launch._hopper_softcap(2, edge * 1.001, 0, bf16, 128) == 2
    assert launch._hopper_softcap(2, 30.0, 0, fp16, 128) == 2            # fp16's P underflows
    assert launch._hopper_softcap(2, 30.0, 2, bf16, 128) == 2            # ALiBi: unbounded scores
    assert launch._hopper_softcap(1, 30.0, 0, bf16, 128) == 1            # the plain variant
    assert launch._hopper_softcap(0, 0.0, 0, bf16, 128) == 0
    assert launch._hopper_softcap(2, 30.0, 0, bf16, 64) == 2             # measured slower there
    monkeypatch.setattr(launch, "HOPPER_SOFTCAP_SHIFT", True)
    assert launch._hopper_softcap(2, 30.0, 0, bf16, 64) == 12
    assert launch._hopper_softcap(2, 30.0, 0, fp16, 64) == 2
    monkeypatch.setattr(launch, "HOPPER_SOFTCAP_SHIFT", False)
    assert launch._hopper_softcap(2, 30.0, 0, bf16, 128) == 2
    monkeypatch.setattr(launch, "HOPPER_SOFTCAP_SHIFT", 1)
    with pytest.raises(ValueError, match="HOPPER_SOFTCAP_SHIFT must be None, True or False"):
        launch._hopper_softcap(2, 30.0, 0, bf16, 128)
    # the exponentials' share on the FMA pipe rides on the fixed shift only
    monkeypatch.setattr(launch, "HOPPER_SOFTCAP_SHIFT", None)
    monkeypatch.setattr(launch, "HOPPER_SOFTCAP_EXP2_FMA", 4)
    assert launch._hopper_softcap(2, 30.0, 0, bf16, 128) == 412
    assert launch._hopper_softcap(2, 30.0, 2, bf16, 128) == 2
    monkeypatch.setattr(launch, "HOPPER_SOFTCAP_EXP2_FMA", 3)
    with pytest.raises(ValueError, match="HOPPER_SOFTCAP_EXP2_FMA must be 0, 2 or 4"):
        launch._hopper_softcap(2, 30.0, 0, bf16, 128)


def test_softcap_fixed_shift_takes_the_row_max_off_the_step():
    """With the fixed shift (HAS_SOFTCAP 12) the forward's step loop has no row max and no
    rescale: shorter than the running max's (HAS_SOFTCAP 2) by more than a tile's 64 max
    operations a thread (sm_90 SASS, d=128 causal, the launch's d=128 settings; 828 against
    1005 instructions at the time of writing, 865 without softcap), unspilled."""
    flags = dict(CAUSAL=True, OVERLAP_PV=True, RESCALE=8.0)
    counts = {sc: _sass_counts("fwd", 128, "bf16", dict(flags, HAS_SOFTCAP=sc)) for sc in (2, 12)}
    assert counts[12]["STEP_LOOP"] + 64 < counts[2]["STEP_LOOP"], counts
    assert counts[12]["STL"] == 0, counts
    assert counts[12]["EX2_OVERLAPPING_PV"] >= 64, counts        # P V still overlaps the softmax


SHIFT_CASES = [
    # (name, d, N, Nk, causal, softcap, pattern)
    ("cap1-d128-causal-kv-longer", 128, 700, 1100, True, 1.0, sf.local(2) | sf.global_blocks(1)),
    ("cap30-d128-dense", 128, 1000, 1000, False, 30.0, sf.dense()),
    ("cap62-d64-causal", 64, 900, 900, True, 62.0, sf.dense()),
    ("cap50-d128-bigbird", 128, 1300, 1300, False, 50.0, sf.bigbird(window=1, globals=1, random=2)),
]


@gpu
@pytest.mark.parametrize("exp2_fma", [0, 4, 2], ids=["mufu", "fma-quarter", "fma-half"])
@pytest.mark.parametrize("name,d,N,Nk,causal,softcap,pattern", SHIFT_CASES, ids=[c[0] for c in SHIFT_CASES])
def test_hopper_softcap_fixed_shift_matches_the_oracle(name, d, N, Nk, causal, softcap, pattern,
                                                       exp2_fma, hopper_only, monkeypatch):
    """The fixed shift at its extremes: a third of the rows see every key at -cap (their
    exponentials near 2^(HI - span), 2^-115 at cap 62), a third at +cap (2^HI), the rest
    random. Output, LSE and every gradient (bfloat16, Hopper kernels forced on) within twice
    the error of the same kernels with the running max (``HOPPER_SOFTCAP_SHIFT=False``) against
    the float64 oracle, plus the dtype's floor; nothing NaN or infinite where the oracle is
    finite. ``exp2_fma``: a quarter or half of the exponentials by ``_exp2_fma``'s polynomial
    (``launch.HOPPER_SOFTCAP_EXP2_FMA``)."""
    from sparseflash.reference import reference_attention, token_mask

    monkeypatch.setattr(launch, "HOPPER_SOFTCAP_SHIFT", True)            # d=64 too
    monkeypatch.setattr(launch, "HOPPER_SOFTCAP_EXP2_FMA", exp2_fma)
    assert launch._hopper_softcap(2, softcap, 0, torch.bfloat16, d) == 12 + 100 * exp2_fma
    g = torch.Generator(device="cuda").manual_seed(3)
    B, H = 1, 2
    u = torch.randn(d, device="cuda", generator=g)
    u = u / u.norm() * 4.0
    k = (u + 0.3 * torch.randn(B, H, Nk, d, device="cuda", generator=g)).to(torch.bfloat16)
    q = torch.randn(B, H, N, d, device="cuda", generator=g)
    rows = torch.arange(N, device="cuda") % 3
    q[:, :, rows == 0] = -2.0 * softcap * u          # scale * q.k far below -cap: every key capped
    q[:, :, rows == 1] = 2.0 * softcap * u           # ... far above +cap
    q = q.to(torch.bfloat16)
    v = torch.randn(B, H, Nk, d, device="cuda", generator=g).to(torch.bfloat16)
    do = torch.randn(B, H, N, d, device="cuda", generator=g).to(torch.bfloat16)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    kw = dict(softcap=softcap)
    got = _run(q, k, v, do, pattern, causal, kw)
    monkeypatch.setattr(launch, "HOPPER_SOFTCAP_SHIFT", False)
    running = _run(q, k, v, do, pattern, causal, kw)

    layout = sf.compile(pattern, N, kv_len=Nk, block_size=128, causal=causal, num_heads=H)
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref, ref_lse = reference_attention(q64, k64, v64, layout, mask=token_mask(layout, B),
                                       positions=positions(N, Nk), softcap=softcap)
    refs = (ref, ref_lse, *torch.autograd.grad(ref, (q64, k64, v64), do.double()))
    finite = ~torch.isinf(ref_lse)
    assert torch.equal(torch.isinf(got[1]), ~finite), "rows that see nothing"
    for name_, h, r_run, r in zip(("out", "lse", "dq", "dk", "dv"), got, running, refs):
        sel = finite if name_ == "lse" else torch.ones_like(r, dtype=torch.bool)
        assert torch.isfinite(h[sel]).all(), f"{name_}: not finite"
        e_h = (h.double() - r)[sel].abs().max().item()
        e_r = (r_run.double() - r)[sel].abs().max().item()
        floor = 1e-4 if name_ == "lse" else 1e-2 * 0.1 * max(r.abs().max().item(), 1.0)
        assert e_h <= 2 * e_r + floor, f"{name_}: fixed shift {e_h:.2e} vs running max {e_r:.2e}"


@gpu
@pytest.mark.parametrize("d,pattern", [(128, sf.local(2) | sf.global_blocks(1)), (64, sf.dense())],
                         ids=["d128-local-global", "d64-dense"])
def test_hopper_quad_dropout_over_packed_documents(d, pattern, monkeypatch):
    """Packed documents of odd lengths with dropout in the default "quad" draws, through the
    Hopper forward and fused backward (forced on): positions restart inside a 64-row tile, so
    the quad mapping's query
    groups are not the tensor rows'. Output and every gradient equal the float64 oracle of each
    document given the host mask drawn by position (``dropout_keep(..., positions=)``), within
    twice the portable kernels' error plus the dtype's floor, and the mask moves the output far
    beyond that error."""
    from sparseflash import philox
    from sparseflash.attention import _rng_ints
    from sparseflash.reference import reference_attention, token_mask

    assert philox.dropout_variant()[1] == 2, "the default 16-bit draws are quad"
    lens, H, Hkv, p = [300, 1, 457, 266], 4, 2, 0.2
    total = sum(lens)
    cu = torch.tensor(np.cumsum([0] + lens), dtype=torch.int32, device="cuda")
    dtype = torch.float16 if d == 64 else torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(3)
    q = torch.randn(1, H, total, d, device="cuda", dtype=dtype, generator=g)
    k, v = (torch.randn(1, Hkv, total, d, device="cuda", dtype=dtype, generator=g) for _ in range(2))
    do = torch.randn_like(q)

    def run(hopper):
        monkeypatch.setattr(launch, "USE_HOPPER", hopper)
        monkeypatch.setattr(launch, "USE_HOPPER_BWD", hopper)
        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
        torch.manual_seed(21)
        out = sf.sparse_attention(qg, kg, vg, pattern, block_size=128, causal=True, dropout_p=p,
                                  cu_seqlens=cu)
        return (out, *torch.autograd.grad(out, (qg, kg, vg), do))

    got, portable = run(True), run(False)
    torch.manual_seed(21)
    seed, offset = _rng_ints(philox.draw_seed())
    floor = {torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]
    start, effect, err_out = 0, 0.0, 0.0
    for n in lens:
        sl = slice(start, start + n)
        keep = philox.dropout_keep(seed, offset, torch.arange(H)[None, :, None, None],
                                   torch.arange(start, start + n), torch.arange(n), p,
                                   positions=torch.arange(n))
        layout = sf.compile(pattern, n, block_size=128, causal=True, num_heads=H)
        q64, k64, v64 = (t[:, :, sl].double().requires_grad_(True) for t in (q, k, v))
        ref, _ = reference_attention(q64, k64, v64, layout, mask=token_mask(layout, 1),
                                     positions=positions(n, n), keep=keep, dropout_p=p)
        refs = (ref, *torch.autograd.grad(ref, (q64, k64, v64), do[:, :, sl].double()))
        plain, _ = reference_attention(q64, k64, v64, layout, mask=token_mask(layout, 1),
                                       positions=positions(n, n))
        for name, h, pt, r in zip(("out", "dq", "dk", "dv"), got, portable, refs):
            assert torch.isfinite(h).all(), f"{name}: NaN or Inf"
            e_h = (h[:, :, sl].double() - r).abs().max().item()
            e_p = (pt[:, :, sl].double() - r).abs().max().item()
            assert e_h <= 2 * e_p + floor, f"doc of {n}, {name}: Hopper {e_h:.2e} vs portable {e_p:.2e}"
            if name == "out":
                err_out = max(err_out, e_h)
        effect = max(effect, (plain.detach() - ref.detach()).abs().max().item())
        start += n
    assert effect > 4 * err_out, f"dropout effect {effect:.2e} vs error {err_out:.2e}"


@gpu
def test_hopper_refuses_the_interleave_dropout_mapping(hopper_only, monkeypatch):
    """The Hopper kernels draw the "mma" mapping only: forcing them with the other says so."""
    from sparseflash import philox

    monkeypatch.setattr(philox, "DROPOUT_MAPPING", "interleave")
    q = torch.randn(1, 2, 256, 128, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="interleave"):
        sf.sparse_attention(q, q, q, sf.local(1), block_size=128, dropout_p=0.1)


# ------------------------------------------------------------------ dropout, on a Hopper GPU
DROPOUT_CASES = [
    # (name, pattern, shape kwargs, causal, extra call kwargs, philox variant)
    ("local-global-causal-1000", sf.local(2) | sf.global_blocks(1),
     dict(B=1, H=2, Hkv=2, N=1000, Nk=1000, d=128), True, {}, {}),
    ("dense-kv-longer-gqa-batch-2", sf.dense(),
     dict(B=2, H=4, Hkv=2, N=300, Nk=1000, d=128), True, {}, {}),
    ("bigbird-noncausal-d64-8bit", sf.bigbird(window=1, globals=1, random=2),
     dict(B=1, H=2, Hkv=1, N=700, Nk=700, d=64), False, {}, dict(DROPOUT_BITS=8, DROPOUT_MAPPING="mma")),
    ("window-softcap-alibi-7rounds", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=1100, Nk=1100, d=128), True,
     dict(window_size=(300, 0), softcap=2.0, alibi="heads"), dict(DROPOUT_ROUNDS=7)),
    ("gqa-2-to-1", sf.local(1) | sf.global_blocks(1),
     dict(B=1, H=2, Hkv=1, N=1000, Nk=1000, d=128), True, {}, {}),
    ("quad-local-global-causal-1000", sf.local(2) | sf.global_blocks(1),
     dict(B=1, H=2, Hkv=2, N=1000, Nk=1000, d=128), True, {}, dict(DROPOUT_MAPPING="quad")),
    ("quad-dense-kv-longer-gqa-batch-2", sf.dense(),
     dict(B=2, H=4, Hkv=2, N=300, Nk=1000, d=128), True, {}, dict(DROPOUT_MAPPING="quad")),
    ("quad-bigbird-noncausal-d64", sf.bigbird(window=1, globals=1, random=2),
     dict(B=1, H=2, Hkv=1, N=700, Nk=700, d=64), False, {}, dict(DROPOUT_MAPPING="quad")),
    ("quad-window-softcap-alibi-7rounds", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=1100, Nk=1100, d=128), True,
     dict(window_size=(300, 0), softcap=2.0, alibi="heads"),
     dict(DROPOUT_MAPPING="quad", DROPOUT_ROUNDS=7)),
    # 8-bit draws in the quad mapping (lane pairs trade words in both kernels)
    ("quad8-local-global-causal-1000", sf.local(2) | sf.global_blocks(1),
     dict(B=1, H=2, Hkv=2, N=1000, Nk=1000, d=128), True, {}, dict(DROPOUT_BITS=8, DROPOUT_ROUNDS=7)),
    ("quad8-dense-kv-longer-gqa-batch-2", sf.dense(),
     dict(B=2, H=4, Hkv=2, N=300, Nk=1000, d=128), True, {}, dict(DROPOUT_BITS=8)),
    ("quad8-bigbird-noncausal-d64", sf.bigbird(window=1, globals=1, random=2),
     dict(B=1, H=2, Hkv=1, N=700, Nk=700, d=64), False, {}, dict(DROPOUT_BITS=8, DROPOUT_ROUNDS=7)),
    ("quad8-window-softcap-alibi", sf.dense(),
     dict(B=1, H=4, Hkv=2, N=1100, Nk=1100, d=128), True,
     dict(window_size=(300, 0), softcap=2.0, alibi="heads"), dict(DROPOUT_BITS=8, DROPOUT_ROUNDS=7)),
    # the non-causal ALiBi without softcap: the forward's abs form split by sides
    # (launch.HOPPER_FWD_ALIBI_SIDES, the default since stop 66), keys longer than queries
    ("quad-noncausal-alibi-sides-kv-longer", sf.local(2) | sf.global_blocks(1),
     dict(B=1, H=4, Hkv=2, N=700, Nk=900, d=128), False, dict(alibi="heads"),
     dict(DROPOUT_MAPPING="quad")),
    # softcap without ALiBi, bfloat16 at d=128: the forward's fixed shift (launch._hopper_softcap)
    ("quad-softcap-fixed-shift-kv-longer", sf.local(2) | sf.global_blocks(1),
     dict(B=1, H=2, Hkv=1, N=900, Nk=1300, d=128), True, dict(softcap=2.0),
     dict(DROPOUT_MAPPING="quad", DROPOUT_ROUNDS=7)),
]


@gpu
@pytest.mark.parametrize("name,pattern,shape,causal,extra,variant", DROPOUT_CASES,
                         ids=[c[0] for c in DROPOUT_CASES])
def test_hopper_dropout_matches_the_oracle_with_its_mask(name, pattern, shape, causal, extra,
                                                         variant, monkeypatch):
    """Dropout through the Hopper forward and dK/dV kernels (forced on) against the float64
    oracle given the Philox mask the call drew (sparseflash.philox, the torch backend's bits),
    forward, LSE and every gradient, within twice the portable kernels' error on the same
    inputs and seed plus the dtype's floor; the portable kernels must drop the same entries
    (their outputs agree far more closely than dropout moves them)."""
    from sparseflash import philox
    from sparseflash.attention import _rng_ints
    from sparseflash.reference import reference_attention, token_mask

    B, H, Hkv, N, Nk, d = (shape[x] for x in ("B", "H", "Hkv", "N", "Nk", "d"))
    dtype = torch.float16 if d == 64 else torch.bfloat16
    for attr, value in variant.items():
        monkeypatch.setattr(philox if attr.startswith("DROPOUT") else launch, attr, value)
    p = 0.2
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(B, H, N, d, device="cuda", dtype=dtype, generator=g).requires_grad_(True)
    k = torch.randn(B, Hkv, Nk, d, device="cuda", dtype=dtype, generator=g).requires_grad_(True)
    v = torch.randn(B, Hkv, Nk, d, device="cuda", dtype=dtype, generator=g).requires_grad_(True)
    do = torch.randn(B, H, N, d, device="cuda", dtype=dtype, generator=g)
    kw = {key: val for key, val in extra.items() if key != "alibi"}
    if extra.get("alibi") == "heads":
        kw["alibi_slopes"] = torch.tensor([2.0 ** -(2 * h + 1) for h in range(H)], device="cuda")
    kw["dropout_p"] = p

    def run(hopper):
        monkeypatch.setattr(launch, "USE_HOPPER", hopper)
        monkeypatch.setattr(launch, "USE_HOPPER_BWD", hopper)
        torch.manual_seed(11)
        return _run(q, k, v, do, pattern, causal, kw)

    got, portable = run(True), run(False)
    torch.manual_seed(11)
    seed, offset = _rng_ints(philox.draw_seed())
    bh = (torch.arange(B)[:, None] * H + torch.arange(H)[None, :])[:, :, None, None]
    keep = philox.dropout_keep(seed, offset, bh, torch.arange(N), torch.arange(Nk), p,
                               positions=positions(N, Nk)[0])
    layout = sf.compile(pattern, N, kv_len=Nk, block_size=128, causal=causal, num_heads=H,
                        window_size=kw.get("window_size"))
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref, ref_lse = reference_attention(
        q64, k64, v64, layout, mask=token_mask(layout, B), positions=positions(N, Nk),
        softcap=kw.get("softcap", 0.0), alibi_slopes=kw.get("alibi_slopes"), keep=keep,
        dropout_p=p)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
    undropped, _ = reference_attention(
        q64, k64, v64, layout, mask=token_mask(layout, B), positions=positions(N, Nk),
        softcap=kw.get("softcap", 0.0), alibi_slopes=kw.get("alibi_slopes"))
    finite = ~torch.isinf(ref_lse)
    floor = {torch.float16: 1e-3, torch.bfloat16: 1e-2}[dtype]
    errors = {}
    for name_, h, pt, r in zip(("out", "lse", "dq", "dk", "dv"), got, portable, (ref, ref_lse, *ref_grads)):
        assert torch.isfinite(h[finite] if name_ == "lse" else h).all(), f"{name_}: NaN or Inf"
        sel = finite if name_ == "lse" else torch.ones_like(r, dtype=torch.bool)
        e_h = errors[name_] = (h.double() - r)[sel].abs().max().item()
        e_p = (pt.double() - r)[sel].abs().max().item()
        assert e_h <= 2 * e_p + (1e-4 if name_ == "lse" else floor), \
            f"{name_}: Hopper error {e_h:.2e} vs portable {e_p:.2e}"
    # dropout moves the output far beyond the error (a kernel that ignored the mask, or drew
    # other bits, would fail here)
    effect = (undropped.detach() - ref.detach()).abs().max().item()
    assert effect > 4 * errors["out"], f"dropout effect {effect:.2e} vs error {errors['out']:.2e}"
    assert 0.75 < keep.float().mean().item() < 0.85


def test_dispatcher_gives_every_applicable_backward_the_hopper_dkdv(monkeypatch):
    """With the default switch the Hopper dK/dV kernel runs wherever the Hopper kernels apply:
    d=64 and d=128, causal or not, with softcap (it measured faster than the portable dK/dV
    kernel on all of them once its statistics came through the copy engine). Switched off it
    never runs. The checks before this rule (a CUDA Hopper tensor) are bypassed: this runs on
    the CPU."""
    monkeypatch.setattr(launch, "_hopper_applies", lambda *a, **kw: None)
    monkeypatch.setattr(launch, "_tma_capable", lambda *t: True)
    for softcap in (0.0, 30.0):
        kw = dict(scale=0.1, config=None, softcap=softcap, alibi=None, dropout_p=0.0)
        for causal, d in ((False, 128), (True, 128), (False, 64), (True, 64)):
            layout = sf.compile(sf.local(1), 512, block_size=128, causal=causal)
            q = torch.zeros(1, 1, 512, d)
            assert launch._use_hopper_bwd(q, q, q, q, layout, **kw), (causal, d, softcap)
    monkeypatch.setattr(launch, "USE_HOPPER_BWD", False)
    assert not launch._use_hopper_bwd(q, q, q, q, layout, **kw)


@gpu
@pytest.mark.parametrize("fused", [False, True], ids=["dq-kernel", "fused-dq"])
@pytest.mark.parametrize("name,pattern,kw", CASES, ids=[c[0] for c in CASES])
def test_hopper_backward_with_and_without_the_fused_dq(name, pattern, kw, fused, hopper_only,
                                                         monkeypatch):
    """Both backward forms (``launch.HOPPER_FUSED_DQ``: the dK/dV kernel adds dS K to an fp32
    accumulator, or the portable dQ kernel recomputes S and dP) against the float64 oracle on
    the awkward shapes: kv_len > seq_len (steps that start before row 0, which the
    accumulator's padding takes), packed one-token documents, GQA, a token window, d=64."""
    monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", fused)
    kw = dict(kw)
    kw.setdefault("d", 128)
    check(pattern, bs=128, dtype=torch.bfloat16, backend="triton", **kw)


@gpu
@pytest.mark.parametrize("step_m", [64, 128])
@pytest.mark.parametrize("name,pattern,kw", CASES, ids=[c[0] for c in CASES])
def test_hopper_d64_backward_steps_match_the_oracle(name, pattern, kw, step_m, hopper_only,
                                                    monkeypatch):
    """The fused backward at d=64 with either step (``launch.HOPPER_BWD_STEP_M``: 64 queries,
    or 128 in two parts of 64 that share a slot, a meeting and one dQ product) against the
    float64 oracle on the awkward shapes of CASES (kv_len > seq_len, packed one-token documents,
    GQA, a token window, a batch of 2, 1000- and 1300-token rows: steps past the sequence's
    end)."""
    monkeypatch.setattr(launch, "HOPPER_BWD_STEP_M", step_m)
    monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", True)
    check(pattern, bs=128, dtype=torch.bfloat16, backend="triton", **dict(kw, d=64))


def _d64_batch(opts, seed, hkv=2, device="cuda"):
    """bf16 q, k, v, dO at d=64 with 4 query heads over ``hkv`` key heads and the call's
    keyword arguments from ``opts``: ``packed`` (documents of 1, 300, 1 and 831 tokens, B=1),
    else B=2 with 900 queries and 1100 keys; ``padding`` (key padding across a block in the
    first row); ``alibi`` (random slopes); the rest passed on."""
    opts = dict(opts)
    g = torch.Generator(device=device).manual_seed(seed)
    packed, padding = opts.pop("packed", False), opts.pop("padding", False)
    B, n, nk = (1, 1133, 1133) if packed else (2, 900, 1100)
    q = torch.randn(B, 4, n, 64, device=device, dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(B, hkv, nk, 64, device=device, dtype=torch.bfloat16, generator=g)
            for _ in range(2))
    if opts.pop("alibi", False):
        opts["alibi_slopes"] = torch.rand(4, device=device, generator=g) * 0.2
    if packed:
        opts["cu_seqlens"] = torch.tensor([0, 1, 301, 302, 1133], dtype=torch.int32, device=device)
    if padding:
        kpm = torch.ones(B, nk, dtype=torch.bool, device=device)
        kpm[0, 200:333] = False
        opts["key_padding_mask"] = kpm
    return q, k, v, torch.randn_like(q), opts


@gpu
@pytest.mark.parametrize("opts", [
    dict(), dict(causal=True), dict(causal=True, softcap=20.0), dict(alibi=True),
    dict(causal=True, alibi=True), dict(causal=True, dropout_p=0.2),
    dict(causal=True, packed=True), dict(padding=True)],
    ids=["plain", "causal", "causal-softcap", "alibi", "causal-alibi", "causal-dropout",
         "packed-docs", "key-padding"])
def test_hopper_d64_128_query_steps_equal_64(opts, hopper_only, monkeypatch):
    """A key's dK and dV take the same products in the same order with either step size (128
    queries are 64 and then 64; ``HOPPER_BWD_DQ_ROWS`` changes only how dQ is split between the
    warpgroups), so ``HOPPER_BWD_STEP_M`` 128 gives bit for bit the dK and dV of 64 and dQ
    within the fp32 adds' order (their order across key tiles varies from run to run), with
    every option the kernel has: softcap, both ALiBi forms, dropout (the same seed
    draws the same mask), packed documents of odd lengths (the 4-byte statistics copies),
    key padding that crosses a block; GQA, kv_len > seq_len throughout."""
    q, k, v, do, opts = _d64_batch(opts, 1)
    monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", True)
    results = []
    for step_m, dq_rows in ((64, False), (128, False), (128, True)):
        monkeypatch.setattr(launch, "HOPPER_BWD_STEP_M", step_m)
        monkeypatch.setattr(launch, "HOPPER_BWD_DQ_ROWS", dq_rows)
        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
        torch.manual_seed(7)
        out = sf.sparse_attention(qg, kg, vg, sf.local(2) | sf.global_blocks(1), block_size=128,
                                  **opts)
        results.append((out, ) + torch.autograd.grad(out, (qg, kg, vg), do))
    ref = results[0]
    assert (ref[2] != 0).any() and (ref[3] != 0).any()
    for form, got in zip(("128", "128-dq-rows"), results[1:]):
        assert all(torch.isfinite(t).all() for t in ref + got), form
        assert torch.equal(got[0], ref[0]), form
        assert torch.equal(got[2], ref[2]) and torch.equal(got[3], ref[3]), f"dK, dV ({form})"
        err = (got[1].float() - ref[1].float()).abs().max()
        assert err <= 1e-2 * ref[1].float().abs().max(), f"dq differs by {err:.3e} ({form})"


@gpu
@pytest.mark.parametrize("opts", [
    dict(), dict(causal=True), dict(causal=True, softcap=20.0), dict(causal=True, alibi=True),
    dict(causal=True, dropout_p=0.2), dict(causal=True, packed=True), dict(padding=True),
    dict(mha=True), dict(unfused=True), dict(causal=True, unfused=True, mha=True)],
    ids=["plain", "causal", "causal-softcap", "causal-alibi", "causal-dropout", "packed-docs",
         "key-padding", "mha", "unfused-dq", "unfused-dq-causal-mha"])
def test_hopper_d64_kv_in_registers_equals_shared_memory(opts, hopper_only, monkeypatch):
    """``launch.HOPPER_BWD_KV_REGS``: the d=64 dK/dV kernel's S^T = K Q^T and dP^T = V dO^T
    with K and V as A operands from registers are the same products as from shared memory, so
    dK and dV are bit for bit equal and dQ within the fp32 adds' order (across key tiles it
    varies from run to run), with every option (GQA 4/2 unless ``mha``), forced on where the
    default keeps them in shared memory (dropout, the causal ALiBi's column form, the unfused
    kernel: ``HOPPER_FUSED_DQ=False``, whose loop multiplied P^T in place of K from the second
    step on until the registers went through the step's last wait, run26)."""
    opts = dict(opts)
    if opts.pop("unfused", False):
        monkeypatch.setattr(launch, "HOPPER_FUSED_DQ", False)
    q, k, v, do, opts = _d64_batch(opts, 3, hkv=4 if opts.pop("mha", False) else 2)
    results = []
    for kv_regs in (False, True):
        monkeypatch.setattr(launch, "HOPPER_BWD_KV_REGS", kv_regs)
        qg, kg, vg = (t.detach().requires_grad_(True) for t in (q, k, v))
        torch.manual_seed(7)
        out = sf.sparse_attention(qg, kg, vg, sf.local(2) | sf.global_blocks(1), block_size=128,
                                  **opts)
        results.append((out, ) + torch.autograd.grad(out, (qg, kg, vg), do))
    ref, got = results
    assert (ref[2] != 0).any() and (ref[3] != 0).any()
    assert all(torch.isfinite(t).all() for t in ref + got)
    assert torch.equal(got[0], ref[0])
    assert torch.equal(got[2], ref[2]) and torch.equal(got[3], ref[3]), "dK, dV"
    err = (got[1].float() - ref[1].float()).abs().max()
    assert err <= 1e-2 * ref[1].float().abs().max(), f"dq differs by {err:.3e}"


@gpu
@pytest.mark.parametrize("mode,d,lens", [
    ("cpasync", 128, [1, 300, 1, 520]), ("cpasync", 64, [130, 300]), ("load", 128, [1, 127]),
    ("tma", 64, [300, 520]), (None, 128, [130, 300])],
    ids=["cpasync-d128-one-token-docs", "cpasync-d64-130-300", "load-d128-1-127",
         "tma-d64-aligned", "default-d128-130-300"])
def test_hopper_dkdv_statistics_modes_match_the_oracle(mode, d, lens, hopper_only, monkeypatch):
    """Each way the dK/dV kernel's consumers get lse2/delta (``launch.HOPPER_BWD_STATS``): the
    1-D copies (aligned rows only), the producer's 4-byte asynchronous copies (any alignment,
    the default where TMA cannot start aligned: packed documents of odd lengths faulted with
    TMA), and the consumers' own loads, against the float64 oracle with GQA."""
    monkeypatch.setattr(launch, "HOPPER_BWD_STATS", mode)
    check(sf.local(1) | sf.global_blocks(1), H=4, Hkv=2, q_lens=lens, packed=True, causal=True,
          d=d, bs=128, dtype=torch.bfloat16)


def test_persistent_forward_is_the_default_on_short_even_rows():
    """``launch._persistent_default``: the persistent forward where the tiles are short (at
    most 32 steps of 128 keys) and even (none above 1.25x the mean), where it measured faster;
    not on causal or global rows, nor on long rows; never for several sequences (it would
    read the table on the host) or without a per-layout cache."""
    cases = [(sf.local(2), 16384, False, True), (sf.butterfly(), 16384, False, True),
             (sf.strided(16) | sf.local(1), 16384, False, True), (sf.local(8), 16384, False, True),
             (sf.dense(), 16384, True, False), (sf.dense(), 4096, True, False),
             (sf.bigbird(3, 2, 3), 16384, False, False), (sf.local(32), 65536, False, False),
             (sf.dense(), 16384, False, False)]
    for pattern, n, causal, want in cases:
        layout = sf.compile(pattern, n, block_size=128, causal=causal)
        ptr = torch.from_numpy(np.array(layout.fwd_ptr))
        assert launch._persistent_default(layout, ptr, {}) is want, (pattern, n, causal)
        assert launch._persistent_default(layout, ptr, None) is False


def test_forward_row_counts_are_read_from_the_device_once_per_layout(monkeypatch):
    """The launch order and the persistent rule share one host copy of the forward table's row
    counts per layout (``launch._row_counts``), and the dK/dV order keeps its own (the
    transposed table's)."""
    layout = sf.compile(sf.local(2) | sf.global_blocks(1), 4096, block_size=128)
    fwd_ptr = torch.from_numpy(np.array(layout.fwd_ptr))
    bwd_ptr = torch.from_numpy(np.array(layout.bwd_ptr))
    reads = []
    cpu = torch.Tensor.cpu

    def counting_cpu(t, *a, **k):
        reads.append(t.data_ptr())
        return cpu(t, *a, **k)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    cache = {}
    launch._launch_order(fwd_ptr, cache, kind="fwd", batch=1, num_heads=2, group=1,
                         per_head=False, num_tiles=32, tile=128, block_size=128, reverse=False,
                         first_pos=0)
    launch._persistent_default(layout, fwd_ptr, cache)
    launch._launch_order(fwd_ptr, cache, kind="dq", batch=1, num_heads=2, group=1,
                         per_head=False, num_tiles=32, tile=128, block_size=128, reverse=False,
                         first_pos=0)
    assert reads == [fwd_ptr.data_ptr()]
    launch._launch_order(bwd_ptr, cache, kind="dkdv", batch=1, num_heads=2, group=1,
                         per_head=False, num_tiles=32, tile=128, block_size=128, reverse=False,
                         first_pos=0)
    assert reads == [fwd_ptr.data_ptr(), bwd_ptr.data_ptr()]


def test_dkdv_statistics_copies_need_aligned_rows(monkeypatch):
    """The producer copies a step's lse2/delta rows with TMA only where every copy starts
    16-byte aligned (an unaligned 1-D copy faulted on an H200): N and each sequence's tensor-row
    offset (q_start - q_pos) multiples of 4; elsewhere with 4-byte asynchronous copies. With
    the consumers loading them (``HOPPER_BWD_STATS="load"``) the kernel is the default only
    where it measured faster than the portable one (d=128 without softcap)."""
    from sparseflash.attention import _packed_layout

    pattern = sf.local(1) | sf.global_blocks(1)
    for lens, want in (((300, 520), True), ((1, 300, 1, 520), False), ((130, 300), False),
                       ((4, 8), True)):
        layout = _packed_layout(pattern, lens, lens, 128, True, 2, None)
        assert launch._stats_tma(layout, sum(lens)) is want, lens
    dense = sf.compile(sf.dense(), 1000, block_size=128, causal=True)
    assert launch._stats_tma(dense, 1000) and not launch._stats_tma(dense, 1001)
    monkeypatch.setattr(launch, "_hopper_applies", lambda *a, **kw: None)
    monkeypatch.setattr(launch, "_tma_capable", lambda *t: True)
    layout = _packed_layout(pattern, (1, 300, 1, 520), (1, 300, 1, 520), 128, True, 2, None)
    assert launch._stats_mode(layout, 822) == 2
    with pytest.raises(RuntimeError, match="not 16-byte aligned"):
        monkeypatch.setattr(launch, "HOPPER_BWD_STATS", "tma")
        launch._stats_mode(layout, 822)
    for stats, d, softcap, want in ((None, 128, 30.0, True), (None, 64, 0.0, True),
                                    ("load", 128, 0.0, True), ("load", 128, 30.0, False),
                                    ("load", 64, 0.0, False)):
        monkeypatch.setattr(launch, "HOPPER_BWD_STATS", stats)
        q = torch.zeros(1, 2, 822, d)
        kw = dict(scale=0.1, config=None, softcap=softcap, alibi=None, dropout_p=0.0)
        assert launch._use_hopper_bwd(q, q, q, q, layout, **kw) is want, (stats, d, softcap)


def test_dkdv_statistics_come_through_the_copy_engine():
    """lse2 and delta reach the dK/dV consumers through shared memory: the producer copies a
    step's 64 rows of each (1-D TMA) beside its Q and dO. Loaded by the consumers from global
    memory, the two [64]-query vectors held 32 registers a thread across the products' waits,
    and the kernel spilled (sm_90 SASS stores to local memory: 151 with softcap on a causal
    layout, 33 causal, 17 plain; with the copies 30, 12 and 13)."""
    cpasync = _ptx("dkdv", 128, "bf16", dict(STATS_TMA=2))
    assert re.search(r"cp\.async\.ca\.shared\.global", cpasync), "no 4-byte asynchronous copies"
    assert re.search(r"cp\.async\.mbarrier\.arrive\.shared", cpasync), "copies not tracked"
    ptx = _ptx("dkdv", 128, "bf16", {})
    assert len(re.findall(r"cp\.async\.bulk\.tensor\.1d", ptx)) == 2, "no 1-D copies of lse2/delta"
    # what remains of the consumers' global loads: table entries (the old kernel had 75)
    assert len(re.findall(r"ld\.global", ptx)) <= 16
    counts = _sass_counts("dkdv", 128, "bf16", dict(HAS_SOFTCAP=2, CAUSAL=True, CONSUMER_REGS=240))
    assert counts["STL"] <= 60, counts
    assert counts["DEPBAR"] * 4 <= counts["HGMMA"], counts


@gpu
@pytest.mark.parametrize("slot,persistent", [("shared", 5), ("global", 5), ("shared", True)],
                         ids=["shared-5", "global-5", "shared-every-sm"])
def test_hopper_tile_counter_returns_to_zero(slot, persistent, hopper_only, monkeypatch):
    """The run-time tiles' counter is one buffer per stream (``launch._tile_counter``), which
    each launch leaves at zero (its last increment resets it): repeated forwards on the same
    and on another stream give the oracle's output bit for bit each time, and the counters
    read zero afterwards. With the tiles' slots in global memory too (``HOPPER_TILE_SLOT``)."""
    monkeypatch.setattr(launch, "HOPPER_PERSISTENT", persistent)
    monkeypatch.setattr(launch, "HOPPER_DYNAMIC_TILES", True)
    monkeypatch.setattr(launch, "HOPPER_TILE_SLOT", slot)
    g = torch.Generator(device="cuda").manual_seed(3)
    q = torch.randn(1, 4, 3000, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(1, 2, 3000, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    pattern = sf.local(3) | sf.global_blocks(1)
    first = sf.sparse_attention(q, k, v, pattern, block_size=128, causal=True)
    ref = sf.sparse_attention(q.double().cpu(), k.double().cpu(), v.double().cpu(), pattern,
                              block_size=128, causal=True, backend="torch")
    assert (first.double().cpu() - ref).abs().max() < 2e-2
    side = torch.cuda.Stream()
    for stream in (torch.cuda.current_stream(), side, side, torch.cuda.current_stream()):
        with torch.cuda.stream(stream):
            again = sf.sparse_attention(q, k, v, pattern, block_size=128, causal=True)
        stream.synchronize()
        assert torch.equal(first, again)
    torch.cuda.synchronize()
    assert launch._COUNTERS and all(int(c[0]) == 0 for c in launch._COUNTERS.values())


def test_softcap_exponentials_move_to_the_fma_pipe():
    """``launch.HOPPER_SOFTCAP_EXP2_FMA`` (the hundreds of the forward's HAS_SOFTCAP, with the
    fixed shift): a half or a quarter of the step loop's exponentials leave the MUFU for
    ``_exp2_fma``'s polynomial, while the tanh stay, in registers (no spills, no shared-memory
    traffic added: the column split relabels registers). sm_90 SASS, d=128, bf16, compiled
    on the CPU. Not the default: no gain on an H200 (docs/hopper.md)."""
    flags = dict(CAUSAL=True, SCHEDULED=True, PERSISTENT=True, DYNAMIC=1, Q_BUFS=2)
    base, half, quarter = (_sass_counts("fwd", 128, "bf16", dict(flags, HAS_SOFTCAP=code))
                           for code in (12, 212, 412))
    assert base["STEP_LOOP"] > 0 and base["STEP_EX2"] > 0, "no step loop found"
    assert half["STEP_EX2"] == base["STEP_EX2"] // 2, (half["STEP_EX2"], base["STEP_EX2"])
    assert quarter["STEP_EX2"] == base["STEP_EX2"] * 3 // 4, (quarter["STEP_EX2"], base["STEP_EX2"])
    for c in (half, quarter):
        assert c["STEP_TANH"] == base["STEP_TANH"] > 0
        assert c["STL"] == 0 and c["STS"] == base["STS"]
    # about 8 instructions an exponential moved (the polynomial's 9, less the MUFU's one)
    moved = base["STEP_EX2"] - quarter["STEP_EX2"]
    assert quarter["STEP_LOOP"] - base["STEP_LOOP"] <= 9 * moved, (quarter["STEP_LOOP"], base["STEP_LOOP"])


def test_exp2_polynomial_matches_exp2():
    """``kernels/hopper.py`` ``_exp2_fma``'s arithmetic, step by step in float32 (numpy; the
    kernel's fused multiply-adds rounded once, here emulated in float64 then rounded): within
    1.2e-4 of 2^x relative over the forward's range, exactly 0 below -127.5 and for -inf (a
    masked score), and exact at integers' neighbourhood of 0 within the same bound."""
    from sparseflash.kernels import hopper

    c = [np.float32(float(getattr(hopper, f"_EXP2_C{i}").value)) for i in range(4)]
    x = np.concatenate([np.linspace(-127.4, 8.0, 400001, dtype=np.float32),
                        np.float32([-np.inf, -1e30, -200.0, -128.0, -127.6, 0.0, -0.5, 0.5])])
    m = np.float32(12582912.0)
    xc = np.maximum(x, np.float32(-128.0))
    t = (xc + m).astype(np.float32)
    f = (xc - (t - m)).astype(np.float32)
    p = c[3]
    for k in (2, 1, 0):
        p = (p.astype(np.float64) * f + c[k]).astype(np.float32)
    bits = p.view(np.int32).astype(np.int64) + t.view(np.int32).astype(np.int64) * 8388608
    bits = ((bits + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)      # int32 wrap-around
    got = np.maximum(bits, 0).view(np.float32).astype(np.float64)
    want = np.exp2(x.astype(np.float64))
    live = x > -126.0
    assert np.all(np.abs(got[live] - want[live]) <= 1.2e-4 * want[live])
    assert np.all(got[x < -127.5] == 0.0)
    assert np.all(np.isfinite(got))


@gpu
@pytest.mark.parametrize("d,causal,dense", [(128, True, False), (128, False, True), (64, True, False)],
                         ids=["d128-causal-local", "d128-dense", "d64-causal-local"])
def test_hopper_backward_softcap_factor_early_is_bit_identical(d, causal, dense, hopper_only, monkeypatch):
    """``launch.HOPPER_BWD_CAP_EARLY``: the dK/dV kernel multiplies the softcap's factor into P^T
    before dV's product is issued instead of after: the same products of the same values, so
    outputs, LSE, dK and dV equal bit for bit (dQ within the atomics' rounding), GQA with
    kv_len > seq_len, lengths not multiples of the tile, causal and not, d=128 and d=64."""
    pattern = sf.dense() if dense else sf.local(3) | sf.global_blocks(1)
    ref, got = _runs_by_setting(monkeypatch, "HOPPER_BWD_CAP_EARLY", (False, None), d, 31, pattern,
                                causal, 0.0, 30.0)
    assert all(torch.isfinite(t).all() for t in got)
    _assert_same_results(got, ref)
