"""run26: why test_hopper_backward_with_and_without_the_fused_dq[bigbird-d64-dq-kernel] failed
once with SPARSEFLASH_HOPPER_BWD_KV_REGS=1 (call 2). That case is GQA 2/1 (check's H=2, Hkv=1),
where the default keeps K and V in shared memory. For each form (fused dQ or the dQ kernel) and
HOPPER_BWD_KV_REGS in (False, True), REPS fresh backward passes on the test's inputs: the
gradients' largest error against the float64 oracle, and whether dK/dV equal bit for bit across
the repeats and across the two settings (the same products in the same order: they must).

    PYTHONPATH=. python benchmarks/results/h200-hopper/run26-kv-regs/kv_gqa_check.py
"""
import math
import sys

import torch

sys.path.insert(0, "tests")
import sparseflash as sf  # noqa: E402
from sparseflash.kernels import launch  # noqa: E402
from test_real_batches import rnd, oracle_mask  # noqa: E402
from sparseflash.reference import reference_attention  # noqa: E402

REPS = 6
pattern = sf.bigbird(window=1, globals=1, random=2)
for H, Hkv in ((2, 1), (4, 1), (2, 2)):
    N, d = 1300, 64
    q, k, v, do = (rnd(s, torch.bfloat16, i) for i, s in enumerate(
        [(1, H, N, d), (1, Hkv, N, d), (1, Hkv, N, d), (1, H, N, d)]))
    mask = oracle_mask(pattern, H, [N], [N], 128, False, None, None, 1)
    q64, k64, v64 = (t.double().requires_grad_(True) for t in (q, k, v))
    ref, _ = reference_attention(q64, k64, v64, scale=1 / math.sqrt(d), mask=mask)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
    for fused in (False, True):
        first = None
        for regs in (False, True):
            launch.HOPPER_FUSED_DQ, launch.HOPPER_BWD_KV_REGS = fused, regs
            runs = []
            for _ in range(REPS):
                qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
                out = sf.sparse_attention(qq, kk, vv, pattern, block_size=128)
                runs.append(torch.autograd.grad(out, (qq, kk, vv), do))
            errs = [[(g.double() - r).abs().max().item() for g, r in zip(gr, ref_grads)] for gr in runs]
            worst = [max(e[i] for e in errs) for i in range(3)]
            stable = all(torch.equal(a, b) for gr in runs[1:] for a, b in zip(gr[1:], runs[0][1:]))
            same = None if first is None else all(torch.equal(a, b) for a, b in zip(runs[0][1:], first[1:]))
            first = first or runs[0]
            nan = any(torch.isnan(g).any().item() for gr in runs for g in gr)
            print(f"H={H}/{Hkv} fused_dq={fused} kv_regs={regs}: max err dq {worst[0]:.3e} dk {worst[1]:.3e} "
                  f"dv {worst[2]:.3e}; dK/dV equal across {REPS} runs: {stable}; equal to kv_regs=False: "
                  f"{same}; nan: {nan}", flush=True)
