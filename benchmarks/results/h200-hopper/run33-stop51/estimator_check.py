"""The estimator's h100 and h200 profiles against run33's H100 timings (stop 51): the GPU-only
times of `host_bound_probe.py --only-ours` (`ahead ms`: GPU sleep queued before the call, so no
host gap, after the L2 flush; call1/host_bound.json, 7 cases forward and forward+backward) and
call 1's four dense forwards (`hopper.py --only dense --no-peers --heat 2`, unpatched tree,
the README's table). The same layouts as `benchmarks/host_bound_probe.py`.

    PYTHONPATH=. python benchmarks/results/h200-hopper/run33-stop51/estimator_check.py
"""
import json
from pathlib import Path

import numpy as np

import sparseflash as sf
from benchmarks.host_bound_probe import CASES

HERE = Path(__file__).parent
DENSE_FWD = {   # call 1, unpatched (README), ms
    ("dense causal N=4096 d=128", None, 4096, 128, True): 0.5054,
    ("dense N=16384 d=128", None, 16384, 128, False): 3.4564,
    ("dense causal N=4096 d=64", None, 4096, 64, True): 0.6562,
    ("dense N=16384 d=64", None, 16384, 64, False): 4.2734,
}


def rows():
    ahead = {(r["case"], r["pass_"]): r["ahead_ms"]
             for r in json.loads((HERE / "call1" / "host_bound.json").read_text())["rows"]}
    for case in CASES:
        for p in ("fwd", "fwd+bwd"):
            yield case, p, ahead[(case[0], p)]
    for case, ms in DENSE_FWD.items():
        yield case, "fwd (hopper.py)", ms


def main():
    errors = {"h100": [], "h200": []}
    for (name, pattern, N, d, causal), p, ms in rows():
        H = 2048 // d
        B = 1 if pattern is not None else max(1, 16384 // N)
        layout = sf.compile(pattern or sf.dense(), N, block_size=128, causal=causal, num_heads=H)
        line = f"{name:<36}{p:<17}{ms:8.3f} ms"
        for dev in errors:
            pred = sf.estimate(layout, d, batch=B, device=dev, backward=p == "fwd+bwd").predicted_ms
            errors[dev].append((pred - ms) / ms)
            line += f"   {dev} {pred:7.3f} ({errors[dev][-1]:+.1%})"
        print(line)
    for dev, e in errors.items():
        e = np.abs(e)
        print(f"{dev}: median |error| {np.median(e):.1%}, max {e.max():.1%} over {len(e)} timings")


if __name__ == "__main__":
    main()
