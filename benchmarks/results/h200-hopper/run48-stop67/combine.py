"""run48's summary: puts call 6's FA4 ratios (dense and sparse halves) at the head of each case's
``*_runs`` lists in benchmarks/results/h100/fa4_ratio.json; ``fwd_ratio``/``fwd_bwd_ratio`` and
the minima become run48's (the latest kernels), as run43 did. Also prints the peers' ratio ranges
(cuDNN, FlexAttention) and the sparse efficiency from call 6's rows. Run from the repository root:
``python benchmarks/results/h200-hopper/run48-stop67/combine.py``."""
import json
from pathlib import Path

R = Path(__file__).resolve().parent / "call6-peers"
OUT = Path("benchmarks/results/h100/fa4_ratio.json")

new = []
rows = []
for half in ("dense", "sparse"):
    new += json.loads((R / half / "peers/fa4_ratio.json").read_text())["cases"]
    rows += json.loads((R / half / "peers/hopper.json").read_text())["rows"]
old = json.loads(OUT.read_text())
by_name = {c["case"]: c for c in old["cases"]}
assert set(by_name) == {c["case"] for c in new}, "run48 timed other cases than the summary holds"
cases = []
for c in new:
    o = by_name[c["case"]]
    cases.append({"case": c["case"], "fwd_ratio": c["fwd_ratio"], "fwd_bwd_ratio": c["fwd_bwd_ratio"],
                  "fwd_ratio_runs": [c["fwd_ratio"]] + o["fwd_ratio_runs"],
                  "fwd_bwd_ratio_runs": [c["fwd_bwd_ratio"]] + o["fwd_bwd_ratio_runs"]})
summary = {
    "gpu": "NVIDIA H100 80GB HBM3",
    "min_fwd_ratio": min(c["fwd_ratio"] for c in cases),
    "min_fwd_bwd_ratio": min(c["fwd_bwd_ratio"] for c in cases),
    "source": (
        "benchmarks/results/h200-hopper/run48-stop67/call6-peers (dense, sparse), stop 67, tree 1b45a78 "
        "(stop 66's kernels; without dropout or score modifiers the kernels run43 timed): "
        "`benchmarks/hopper.py --skip portable --flex --only dense|sparse --rounds 3 --heat 1` "
        "(`OUT=DIR PART=peers HLIMIT=270 bash benchmarks/results/h200-hopper/run44-stop63/gpu.sh`), one "
        "NVIDIA H100 80GB HBM3 (driver 580.159.04, torch 2.11.0+cu130, triton 3.6.0), FA4 4.0.0b36, "
        "cuDNN through SDPA and FlexAttention's compiled Triton kernel beside ours, each half's cases in "
        "one process, timed interleaved (benchmarks/timing.py). fwd_ratio / fwd_bwd_ratio and the minima "
        "are run48's (FA4 time / our time within one call); *_runs gives run48's, then run43-stop62's, "
        "run41-stop59's, run38-stop56/call4's and run34-stop52/call7's. The H200's ratios are in "
        "../h200/fa4_ratio.json (stop 50's kernels)."),
    "previous": {k: old[k] for k in ("source", "min_fwd_ratio", "min_fwd_bwd_ratio")},
    "cases": cases,
}
OUT.write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({k: summary[k] for k in ("min_fwd_ratio", "min_fwd_bwd_ratio")}))
for c in cases:
    print(f"{c['case']:50s} fwd {c['fwd_ratio_runs']}  fwd+bwd {c['fwd_bwd_ratio_runs']}")

ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
for peer in ("cudnn", "flex"):
    for p in ("fwd", "fwd+bwd"):
        rs = [ms[(c, peer, p)]["ms"] / ms[(c, "ours", p)]["ms"] for (c, i, q) in ms if i == peer and q == p]
        print(f"{peer} {p}: peer time / ours {min(rs):.3f}-{max(rs):.3f} over {len(rs)} cases")
dense = {d: ms[(f"dense N=16384 d={d}", "ours", "fwd")]["tflops"] for d in (64, 128)}
for c, _, p in sorted(ms):
    if p == "fwd" and "density=" in c and _ == "ours":
        d = int(c.split(" d=")[1].split()[0])
        dens = float(c.split("density=")[1])
        print(f"sparse efficiency {c:50s} {ms[(c, 'ours', 'fwd')]['tflops'] / dense[d]:.3f} (density {dens})")
