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
from benchmarks.host_bound_probe import CASES, case_layout

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


def relative_errors(device):
    """(case, pass, measured ms, predicted ms, (predicted - measured) / measured) a timing."""
    out = []
    for (name, pattern, N, d, causal), p, ms in rows():
        layout, B = case_layout(pattern, N, d, causal)
        pred = sf.estimate(layout, d, batch=B, device=device, backward=p == "fwd+bwd").predicted_ms
        out.append((name, p, ms, pred, (pred - ms) / ms))
    return out


def main():
    both = {dev: relative_errors(dev) for dev in ("h100", "h200")}
    for i, (name, p, ms, _, _) in enumerate(both["h100"]):
        print(f"{name:<36}{p:<17}{ms:8.3f} ms" + "".join(
            f"   {dev} {rows_[i][3]:7.3f} ({rows_[i][4]:+.1%})" for dev, rows_ in both.items()))
    for dev, rows_ in both.items():
        e = np.abs([r[4] for r in rows_])
        print(f"{dev}: median |error| {np.median(e):.1%}, max {e.max():.1%} over {len(e)} timings")


if __name__ == "__main__":
    main()
