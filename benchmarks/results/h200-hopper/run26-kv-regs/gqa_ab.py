"""run26: the d=64 dK/dV kernel's K and V as register A operands (launch.HOPPER_BWD_KV_REGS)
under GQA, where the default keeps them in shared memory (with KV_REGS its step loops spill:
sm_90 SASS, 3 local accesses a step in one consumer). Forward+backward, shared memory (default)
against registers (forced: HOPPER_BWD_KV_REGS=True), interleaved (benchmarks/timing.py), bf16,
16K tokens, 32 query heads over 8 key heads, d=64; dense causal and local(8)|global_blocks(1).
Also checks that the two give the same gradients (dK/dV: the same products and order):

    PYTHONPATH=. python benchmarks/results/h200-hopper/run26-kv-regs/gqa_ab.py OUT.json
"""
import json
import sys

import torch

import sparseflash as sf
from benchmarks import timing
from benchmarks.real_batches import launch_switches
from benchmarks.run import Timer

dev = torch.device("cuda")
timer = Timer(dev, 25, 100, 5)
N, H, HKV, D = 16384, 32, 8, 64
g = torch.Generator(device=dev).manual_seed(0)
q = torch.randn(1, H, N, D, device=dev, dtype=torch.bfloat16, generator=g)
k, v = (torch.randn(1, HKV, N, D, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(2))
do = torch.randn_like(q)
rows = []
for name, pattern in (("dense causal", sf.dense()), ("local(8)|global_blocks(1) causal",
                                                      sf.local(8) | sf.global_blocks(1))):
    layout = sf.compile(pattern, N, block_size=128, causal=True, num_heads=H)

    def fn(q, k, v, layout=layout):
        return sf.sparse_attention(q, k, v, layout)
    grads = {}
    jobs = []
    for impl, value in (("shared memory (default)", None), ("registers", True)):
        def hold(value=value):
            return launch_switches(HOPPER_BWD_KV_REGS=value)
        fwd, step = timing.passes(fn, q, k, v, do, hold)
        grads[impl] = step()
        jobs.append((impl, (fwd, step), hold))
    same = [torch.equal(a, b) for a, b in zip(*grads.values())]
    diff = [((a.float() - b.float()).abs().max() / b.float().abs().max()).item() for a, b in zip(*grads.values())]
    res = timing.interleaved(timer, dev, jobs, rounds=2, heat_s=4.0)
    for impl, (times, _) in res.items():
        rows.append(dict(case=f"{name}, N={N}, H={H}/{HKV}, d={D}", impl=impl,
                         fwd_ms=timing.mean(times[0]), fwd_bwd_ms=timing.mean(times[1]),
                         rounds=times[1], grads_equal=same, grads_max_rel_diff=diff))
        print(json.dumps(rows[-1]), flush=True)
json.dump(rows, open(sys.argv[1], "w"), indent=1)
