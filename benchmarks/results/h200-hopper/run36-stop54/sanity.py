"""Stop 54: a first check of the dropout drawer on the GPU (one forward each way, bit equality)."""
import time
import torch
import sparseflash as sf
from sparseflash.kernels import launch

launch.USE_HOPPER = True
g = torch.Generator(device="cuda").manual_seed(0)
for d in (128, 64):
    q = torch.randn(2, 4, 2000, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(2, 2, 2100, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    outs = []
    for drawer in (None, True):
        launch.HOPPER_DROPOUT_DRAWER = drawer
        torch.manual_seed(7)
        t0 = time.time()
        out, lse = sf.sparse_attention(q, k, v, sf.local(2) | sf.global_blocks(1), block_size=128,
                                       causal=True, dropout_p=0.2, return_lse=True)
        torch.cuda.synchronize()
        outs.append((out, lse))
        print(f"d={d} drawer={drawer}: {time.time() - t0:.1f} s (compile + run)", flush=True)
    print(f"d={d}: out equal {torch.equal(outs[0][0], outs[1][0])}, lse equal {torch.equal(outs[0][1], outs[1][1])}, "
          f"max diff {(outs[0][0].float() - outs[1][0].float()).abs().max().item():.3g}", flush=True)
launch.HOPPER_DROPOUT_DRAWER = None
