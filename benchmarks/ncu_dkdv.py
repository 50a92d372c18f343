"""One forward+backward per case, for Nsight Compute to profile the dK/dV kernels:
dense 16K d=128 (Hopper dK/dV), dense causal 16K d=128 with the Hopper and with the portable
dK/dV kernel. Run under ncu with a kernel filter, e.g.
``ncu --kernel-name regex:dkdv --section SpeedOfLight --section WarpStateStats
--section SchedulerStats python benchmarks/ncu_dkdv.py`` (benchmarks/results/h200-hopper/
run6-dkdv-dispatch/ncu). ``--causal`` runs the Hopper dense causal case only, ``--dropout P`` and
``--softcap C`` with attention dropout P or softcap C (implying ``--causal``), as parity.py's
variants run them (benchmarks/results/h200-hopper/run37-stop55/gpu1.sh)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
from sparseflash.kernels import launch  # noqa: E402

p = float(sys.argv[sys.argv.index("--dropout") + 1]) if "--dropout" in sys.argv else 0.0
cap = float(sys.argv[sys.argv.index("--softcap") + 1]) if "--softcap" in sys.argv else 0.0
only = "--causal" in sys.argv or p > 0 or cap > 0
cases = ((True, True), ) if only else ((False, True), (True, True), (True, False))
for causal, hopper_bwd in cases:
    N, d, H = 16384, 128, 16
    layout = sf.compile(sf.dense(), N, block_size=128, causal=causal, num_heads=H)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, do = (torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(4))
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    launch.USE_HOPPER_BWD = hopper_bwd
    torch.autograd.grad(sf.sparse_attention(q, k, v, layout, dropout_p=p, softcap=cap), (q, k, v), do)
    torch.cuda.synchronize()
    print(f"causal={causal} hopper_dkdv={hopper_bwd} dropout={p} softcap={cap} done", flush=True)
