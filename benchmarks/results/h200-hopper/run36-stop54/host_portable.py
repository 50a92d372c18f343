"""Stop 54: host time of a forward+backward step on the portable kernels (launch.USE_HOPPER and
USE_HOPPER_BWD False) in host_bound_probe.py's first case (local(2) 16K, H=16, d=128, bf16):
the median of 9 rounds of its ``behind_us`` (10 steps queued behind ~50 ms of GPU sleep, so
no launch waits on the GPU). Run once in the tree and once with run34's
portable-direct-launch.patch applied (gpu2.sh), to time the patch."""
import statistics
import sys

import torch

import sparseflash as sf
from benchmarks.host_bound_probe import CASES, behind_us, case_inputs
from sparseflash.kernels import launch

launch.USE_HOPPER = False
launch.USE_HOPPER_BWD = False
name, pattern, N, d, causal = CASES[0]
layout, _, (q, k, v, do) = case_inputs(pattern, N, d, causal, torch.device("cuda"))
q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))


def step():
    return torch.autograd.grad(sf.sparse_attention(q, k, v, layout), (q, k, v), do)


per = [behind_us(step) for _ in range(9)]
print(f"{sys.argv[1] if len(sys.argv) > 1 else 'tree'} ({name}): host us/step median "
      f"{statistics.median(per):.1f} (rounds {', '.join(f'{x:.0f}' for x in per)})", flush=True)
