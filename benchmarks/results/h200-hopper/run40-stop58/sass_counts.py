"""The dK/dV kernel's step loops in sm_90 SASS with and without launch.HOPPER_BWD_SPLIT_LOOPS
(ROWS_LATE 3 against 1), d=128 causal, the default fused-dQ flags, plain / dropout / softcap /
non-causal, compiled by the ptxas this machine's Triton uses (printed first):
    PYTHONPATH=. python benchmarks/results/h200-hopper/run40-stop58/sass_counts.py"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../../../tests"))
import test_hopper as th  # noqa: E402
from triton.backends.nvidia import compiler  # noqa: E402

print("TRITON_PTXAS_PATH", os.environ.get("TRITON_PTXAS_PATH"))
print(compiler.get_ptxas_version().splitlines()[-2:] if hasattr(compiler, "get_ptxas_version") else "")
base = dict(FUSED_DQ=True, NUM_STAGES=2, CAUSAL=True, CONSUMER_REGS=240, SCHEDULED=True, STATS_TMA=1)
for name, extra in [("plain", {}), ("dropout", dict(HAS_DROPOUT=316207)), ("softcap", dict(HAS_SOFTCAP=2)),
                    ("noncausal", dict(CAUSAL=False))]:
    for rl in (1, 3):
        c = th._sass_counts("dkdv", 128, "bf16", dict(base, ROWS_LATE=rl, **extra))
        print(name, "split" if rl == 3 else "one", "step loops' local accesses", c["STEP_LOOPS_LOCAL"],
              "STL", c["STL"], "shortest step loop", c["STEP_LOOP"], "HGMMA", c["HGMMA"], flush=True)
