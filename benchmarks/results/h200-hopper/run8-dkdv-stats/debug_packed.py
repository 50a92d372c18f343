"""Packed-document shapes whose last 64-query steps lie wholly past the tensor's end (the
statistics copy of such a step faulted before the rows were padded), each in a fresh process
(a fault poisons the CUDA context), with the Hopper dK/dV kernel and, as control, without.
Usage: PYTHONPATH=. python debug_packed.py"""
import json
import subprocess
import sys

CASE = r"""
import sys, json, torch, numpy as np, sparseflash as sf
from sparseflash.kernels import launch
lens, H, Hkv, d, pat, bwd = json.loads(sys.argv[1])
launch.USE_HOPPER = True
launch.USE_HOPPER_BWD = bwd
N = sum(lens)
g = torch.Generator(device="cuda").manual_seed(0)
q = torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(True)
k = torch.randn(1, Hkv, N, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(True)
v = torch.randn(1, Hkv, N, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_(True)
cu = torch.tensor(np.cumsum([0] + lens), dtype=torch.int32)
pattern = {"lg": sf.local(1) | sf.global_blocks(1), "dense": sf.dense()}[pat]
out = sf.sparse_attention(q, k, v, pattern, block_size=128, causal=True, cu_seqlens=cu)
gr = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
torch.cuda.synchronize()
print("ok", max(float(t.float().abs().max()) for t in gr))
"""
cases = [([1, 300, 1, 520], 2, 1, 128, "lg", True), ([130, 300], 1, 1, 128, "dense", True),
         ([1, 300, 1, 520], 2, 1, 64, "lg", True)]
for c in cases:
    r = subprocess.run([sys.executable, "-c", CASE, json.dumps(c)], capture_output=True, text=True,
                       timeout=120)
    tail = (r.stdout.strip() or r.stderr.strip().splitlines()[-1] if (r.stdout or r.stderr) else "")
    print(json.dumps(c), "->", tail[:160], flush=True)
