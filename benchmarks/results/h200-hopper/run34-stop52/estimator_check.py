"""The estimator's h100 profile against run34's H100 peers run (stop 52, call 3, the tree before
the host-time cuts): our 40 timed rows of `hopper.py --skip portable --heat 3` (20 cases,
forward and forward+backward; `call3/peers/hopper.json`), as `benchmarks/hopper.py` builds them
(dense: 2048 // d heads, batch 16384 // N; sparse: batch 1). These are the harness's times
(L2 flushed, CUDA events), which include host gaps where a call's host time exceeds its GPU
time (the short forward+backward rows, README), unlike run33's GPU-only check.

    PYTHONPATH=. python benchmarks/results/h200-hopper/run34-stop52/estimator_check.py
"""
import json
from pathlib import Path

import numpy as np

import sparseflash as sf
from benchmarks.hopper import DENSE, SPARSE

HERE = Path(__file__).parent


def cases():
    for N, d, causal in DENSE:
        yield f"dense{' causal' if causal else ''} N={N} d={d}", sf.dense(), N, d, causal, max(1, 16384 // N)
    for name, pattern, N, d in SPARSE:
        yield name, pattern, N, d, False, 1


def relative_errors(run="call3", device="h100"):
    measured = {(r["case"], r["pass"]): r["ms"]
                for r in json.loads((HERE / run / "peers" / "hopper.json").read_text())["rows"]
                if r["impl"] == "ours"}
    out = []
    for name, pattern, N, d, causal, B in cases():
        layout = sf.compile(pattern, N, block_size=128, causal=causal, num_heads=2048 // d)
        case = name if pattern is not None and name.startswith("dense") else \
            f"{name} N={N} d={d} density={layout.density:.3f}"
        for p in ("fwd", "fwd+bwd"):
            ms = measured[(case, p)]
            pred = sf.estimate(layout, d, batch=B, device=device, backward=p == "fwd+bwd").predicted_ms
            out.append((case, p, ms, pred, (pred - ms) / ms))
    return out


def main():
    rows = relative_errors()
    for case, p, ms, pred, err in rows:
        print(f"{case:<50}{p:<9}{ms:8.3f} ms  h100 {pred:8.3f} ({err:+.1%})")
    e = np.abs([r[4] for r in rows])
    for p in ("fwd", "fwd+bwd"):
        ep = np.abs([r[4] for r in rows if r[1] == p])
        print(f"{p}: median |error| {np.median(ep):.1%}, max {ep.max():.1%} over {len(ep)}")
    print(f"h100: median |error| {np.median(e):.1%}, max {e.max():.1%} over {len(e)} timings")


if __name__ == "__main__":
    main()
