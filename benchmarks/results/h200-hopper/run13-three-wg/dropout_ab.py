"""run13 call 4: the d=64 forward with two and three consumer warpgroups, with and without
dropout (p=0.1), dense and dense causal at 16K, H=32, bf16; forward and forward+backward ms
(triton.testing.do_bench medians), both consumer counts in one process, interleaved per case.
Writes $OUT/dropout_ab.json."""
import json
import os

import torch
import triton

import sparseflash as sf
from sparseflash.kernels import launch

rows = []
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v, do = (torch.randn(1, 32, 16384, 64, device="cuda", dtype=torch.bfloat16, generator=g)
               for _ in range(4))
for causal in (False, True):
    for p in (0.0, 0.1):
        for consumers in (2, 3):
            launch.HOPPER_FWD_CONSUMERS = consumers
            qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))

            def fwd():
                return sf.sparse_attention(qq, kk, vv, sf.dense(), block_size=128, causal=causal, dropout_p=p)

            def fwd_bwd():
                out = fwd()
                torch.autograd.grad(out, (qq, kk, vv), do)

            ms_f = triton.testing.do_bench(fwd, warmup=50, rep=300)
            ms_fb = triton.testing.do_bench(fwd_bwd, warmup=20, rep=300)
            rows.append(dict(causal=causal, dropout_p=p, consumers=consumers, fwd_ms=ms_f, fwd_bwd_ms=ms_fb))
            print(rows[-1], flush=True)
meta = dict(torch=torch.__version__, triton=triton.__version__, gpu=torch.cuda.get_device_name(),
            command="PYTHONPATH=. python benchmarks/results/h200-hopper/run13-three-wg/dropout_ab.py")
json.dump(dict(meta=meta, rows=rows), open(os.path.join(os.environ["OUT"], "dropout_ab.json"), "w"), indent=1)
for causal in (False, True):
    for p in (0.0, 0.1):
        two, three = (next(r for r in rows if r["causal"] == causal and r["dropout_p"] == p and r["consumers"] == c)
                      for c in (2, 3))
        print(f"causal={causal} p={p}: fwd two/three {two['fwd_ms'] / three['fwd_ms']:.3f}, "
              f"fwd+bwd {two['fwd_bwd_ms'] / three['fwd_bwd_ms']:.3f}")
