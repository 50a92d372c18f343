"""The estimator's h100 and h200 profiles against the H100 timings of run38 call 4 (stop 56:
`hopper.py --skip portable --rounds 3 --heat 1`, all 20 cases, ours forward and
forward+backward; the kernels of stop 55, which stop 57 left as they were) and of run39 calls 2
and 3 (stop 57: `hopper.py --only dense`, ours, the same default kernels): an out-of-sample check,
since neither profile was fitted to these runs. The layouts are hopper.py's (DENSE, SPARSE).

    PYTHONPATH=. python benchmarks/results/h200-hopper/run39-stop57/estimator_check.py
        [--run "NAME=PATH/hopper.json" ...]

``--run`` (repeatable) checks other runs of hopper.py instead (stop 62: run43's calls 5 and 6,
benchmarks/results/h200-hopper/run43-stop62/estimator_check.txt).
"""
import argparse
import json
from pathlib import Path

import numpy as np

import sparseflash as sf
from benchmarks.hopper import DENSE, SPARSE

HERE = Path(__file__).parent
RUNS = {"run38 c4": HERE.parent / "run38-stop56" / "call4" / "peers" / "hopper.json",
        "run39 c2": HERE / "call2" / "ab" / "hopper.json",
        "run39 c3": HERE / "call3" / "ab" / "hopper.json"}


def cases():
    """{case name as hopper.py writes it: (layout, batch, d)}, built as hopper.py builds them."""
    out = {}
    for N, d, causal in DENSE:
        H, B = 2048 // d, max(1, 16384 // N)
        layout = sf.compile(sf.dense(), N, block_size=128, causal=causal, num_heads=H)
        out[f"dense{' causal' if causal else ''} N={N} d={d}"] = (layout, B, d)
    for name, pattern, N, d in SPARSE:
        layout = sf.compile(pattern, N, block_size=128, num_heads=2048 // d)
        out[f"{name} N={N} d={d} density={layout.density:.3f}"] = (layout, 1, d)
    return out


def rows(runs=RUNS):
    """(run, case, pass, measured ms, h100 ms, h200 ms) for each of ours' timings."""
    known = cases()
    for run, path in runs.items():
        for r in json.loads(path.read_text())["rows"]:
            if r["impl"] != "ours" or r["pass"] not in ("fwd", "fwd+bwd"):
                continue
            layout, B, d = known[r["case"]]
            pred = [sf.estimate(layout, d, batch=B, device=dev, backward=r["pass"] == "fwd+bwd").predicted_ms
                    for dev in ("h100", "h200")]
            yield (run, r["case"], r["pass"], r["ms"], *pred)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], metavar="NAME=PATH",
                    help="a hopper.json of benchmarks/hopper.py to check, named NAME in the table")
    args = ap.parse_args()
    runs = dict(item.split("=", 1) for item in args.run) if args.run else RUNS
    table = list(rows({name: Path(path) for name, path in runs.items()}))
    for run, case, p, ms, h100, h200 in table:
        print(f"{run:<9}{case:<58}{p:<8}{ms:8.3f} ms   h100 {h100:7.3f} ({(h100 - ms) / ms:+.1%})"
              f"   h200 {h200:7.3f} ({(h200 - ms) / ms:+.1%})")
    for i, dev in ((4, "h100"), (5, "h200")):
        for p in ("fwd", "fwd+bwd", None):
            e = np.abs([(t[i] - t[3]) / t[3] for t in table if p is None or t[2] == p])
            print(f"{dev} {p or 'all':<8}: median |error| {np.median(e):.1%}, max {e.max():.1%} "
                  f"over {len(e)} timings")


if __name__ == "__main__":
    main()
