"""Issue cost of the special-function (MUFU) instructions on this GPU against an FMA: each thread
runs ``ITERS`` rounds of one instruction over ``ILP`` independent values (no dependency waits),
one CTA of ``WARPS`` warps per SM slot, many CTAs; the time gives warp instructions per cycle per
SM (with the clock read from the device) and so cycles per warp instruction per sub-partition.
Asks: does ``ex2.approx.f16x2`` (two ``MUFU.EX2.F16`` in SASS) or the bf16x2 tanh cost less per
value than the fp32 forms, and is ``MUFU.TANH`` as cheap as ``MUFU.EX2``?

    PYTHONPATH=. python benchmarks/results/h200-hopper/run48-stop67/mufu_rate.py [--out FILE]"""
import argparse
import json

import torch
import triton
import triton.language as tl

OPS = {
    # name: (asm, constraints, dtype of the values, values per instruction of the PTX form)
    "fma.rn.f32": ("fma.rn.f32 $0, $1, 0f3F7FF000, 0f3A000000;", "=f,f", tl.float32, 1),
    "add.f32 (FADD)": ("add.f32 $0, $1, 0f3A000000;", "=f,f", tl.float32, 1),
    "ex2.approx.f32": ("ex2.approx.ftz.f32 $0, $1;", "=f,f", tl.float32, 1),
    "tanh.approx.f32": ("tanh.approx.f32 $0, $1;", "=f,f", tl.float32, 1),
    "ex2.approx.f16x2": ("ex2.approx.f16x2 $0, $1;", "=r,r", tl.float16, 2),
    "tanh.approx.bf16x2": ("tanh.approx.bf16x2 $0, $1;", "=r,r", tl.bfloat16, 2),
    "fma.rn.bf16x2": ("{.reg .b32 m, a; mov.b32 m, 0x3F7F3F7F; mov.b32 a, 0x3A003A00; "
                      "fma.rn.bf16x2 $0, $1, m, a;}", "=r,r", tl.bfloat16, 2),
}


@triton.jit
def _rounds(X, ASM: tl.constexpr, CONS: tl.constexpr, PACK: tl.constexpr, ITERS: tl.constexpr,
            BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(X + offs)
    for _ in range(ITERS):
        x = tl.inline_asm_elementwise(ASM, CONS, [x], dtype=x.dtype, is_pure=False, pack=PACK)
    tl.store(X + offs, x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--iters", type=int, default=2048)
    args = ap.parse_args()
    dev = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(dev)
    sms = props.multi_processor_count
    warps, ilp = 8, 16                       # 8 warps a CTA, 16 values a thread
    block = warps * 32 * ilp
    ctas = sms * 8
    rows = []
    for name, (asm, cons, dt, per) in OPS.items():
        tdt = {tl.float32: torch.float32, tl.float16: torch.float16, tl.bfloat16: torch.bfloat16}[dt]
        x = (torch.rand(ctas * block, device="cuda") * -0.5).to(tdt)
        _rounds[(ctas,)](x, ASM=asm, CONS=cons, PACK=per, ITERS=args.iters, BLOCK=block, num_warps=warps)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        best = float("inf")
        for _ in range(5):
            start.record()
            _rounds[(ctas,)](x, ASM=asm, CONS=cons, PACK=per, ITERS=args.iters, BLOCK=block, num_warps=warps)
            end.record()
            torch.cuda.synchronize()
            best = min(best, start.elapsed_time(end) * 1e-3)
        # PTX instructions a warp: per thread ilp / per values each, times the iterations
        warp_instr = ctas * warps * (ilp // per) * args.iters
        clock_hz = 1.98e9                     # the H100/H200 hosts' max SM clock (nvidia-smi)
        per_sm_cycle = warp_instr / best / sms / clock_hz
        rows.append(dict(op=name, seconds=best, warp_instr_per_sm_cycle=per_sm_cycle,
                         cycles_per_warp_instr_per_subpartition=4.0 / per_sm_cycle,
                         values_per_sm_cycle=per_sm_cycle * 32 * per))
        print(json.dumps(rows[-1]), flush=True)
    fma = rows[0]["cycles_per_warp_instr_per_subpartition"]
    for r in rows:
        r["cost_in_fmas"] = r["cycles_per_warp_instr_per_subpartition"] / fma
        print(f"{r['op']:20s} {r['cost_in_fmas']:.2f} FMA issue slots a warp instruction", flush=True)
    out = dict(gpu=props.name, sms=sms, torch=torch.__version__, triton=triton.__version__,
               clock_hz_assumed=clock_hz, rows=rows)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
