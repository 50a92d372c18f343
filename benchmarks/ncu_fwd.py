"""One forward per case, for Nsight Compute to profile the Hopper forward kernel: dense 16K at
d=64 (H=32) and d=128 (H=16), bf16, not causal. Run under ncu with a kernel filter, e.g.
``ncu --kernel-name regex:hopper_fwd --section SpeedOfLight --section WarpStateStats
--section SchedulerStats --section ComputeWorkloadAnalysis python benchmarks/ncu_fwd.py``
(benchmarks/results/h200-hopper/run12-rowsum/ncu). ``--d 64`` profiles one head dim only;
``--causal`` takes the causal layout; ``--dropout P`` runs with attention dropout P (as
parity.py's variants run it: dense causal 16K d=128 p=0.1 is ``--d 128 --causal --dropout 0.1``,
benchmarks/results/h200-hopper/run36-stop54/gpu2.sh); ``--softcap C`` with softcap C; ``--set NAME=VALUE[;NAME=VALUE...]`` (repeatable) sets
``sparseflash.kernels.launch`` values first, e.g. ``--set HOPPER_PERSISTENT=False`` for one CTA
per query tile (``VALUE`` a Python literal)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sparseflash as sf  # noqa: E402
from benchmarks.real_batches import parse_launch_settings  # noqa: E402
from sparseflash.kernels import launch  # noqa: E402

for i, arg in enumerate(sys.argv):
    if arg == "--set":
        try:
            settings = parse_launch_settings(sys.argv[i + 1] if i + 1 < len(sys.argv) else "")
        except ValueError as exc:
            raise SystemExit(str(exc))
        for name, value in settings.items():
            setattr(launch, name, value)
            print(f"launch.{name} = {value!r}", flush=True)

dims = [int(sys.argv[sys.argv.index("--d") + 1])] if "--d" in sys.argv else [64, 128]
causal = "--causal" in sys.argv
p = float(sys.argv[sys.argv.index("--dropout") + 1]) if "--dropout" in sys.argv else 0.0
cap = float(sys.argv[sys.argv.index("--softcap") + 1]) if "--softcap" in sys.argv else 0.0
for d in dims:
    N, H = 16384, 2048 // d
    layout = sf.compile(sf.dense(), N, block_size=128, num_heads=H, causal=causal)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, H, N, d, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    sf.sparse_attention(q, k, v, layout, dropout_p=p, softcap=cap)
    torch.cuda.synchronize()
    print(f"d={d} causal={causal} dropout={p} softcap={cap} done", flush=True)
