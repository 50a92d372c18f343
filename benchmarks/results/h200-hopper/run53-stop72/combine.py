"""run53's summary: puts call 4's FA4 ratios (dense and sparse halves, one process each) at the
head of each case's ``*_runs`` lists in benchmarks/results/h100/fa4_ratio.json, as run48 did;
``fwd_ratio``/``fwd_bwd_ratio`` and the minima become run53's (today's kernels). Call 7 timed the
sparse half again on the same warm machine: its ratios go beside as ``*_repeat`` (the ``*_runs``
lists keep one entry a run). Also prints the peers' ratio ranges (cuDNN, FlexAttention) and the
sparse efficiency of both sparse samples. Run from the repository root:
``python benchmarks/results/h200-hopper/run53-stop72/combine.py``."""
import json
from pathlib import Path

R = Path(__file__).resolve().parent
OUT = Path("benchmarks/results/h100/fa4_ratio.json")

new, rows = [], []
for half in ("dense", "sparse"):
    new += json.loads((R / "c4" / half / "fa4_ratio.json").read_text())["cases"]
    rows += json.loads((R / "c4" / half / "hopper.json").read_text())["rows"]
repeat = {c["case"]: c for c in json.loads((R / "c7/s2/fa4_ratio.json").read_text())["cases"]}
rows2 = json.loads((R / "c7/s2/hopper.json").read_text())["rows"]
old = json.loads(OUT.read_text())
by_name = {c["case"]: c for c in old["cases"]}
assert set(by_name) == {c["case"] for c in new}, "run53 timed other cases than the summary holds"
assert set(repeat) <= set(by_name)
cases = []
for c in new:
    o = by_name[c["case"]]
    case = {"case": c["case"], "fwd_ratio": c["fwd_ratio"], "fwd_bwd_ratio": c["fwd_bwd_ratio"],
            "fwd_ratio_runs": [c["fwd_ratio"]] + o["fwd_ratio_runs"],
            "fwd_bwd_ratio_runs": [c["fwd_bwd_ratio"]] + o["fwd_bwd_ratio_runs"]}
    if c["case"] in repeat:
        case["fwd_ratio_repeat"] = repeat[c["case"]]["fwd_ratio"]
        case["fwd_bwd_ratio_repeat"] = repeat[c["case"]]["fwd_bwd_ratio"]
    cases.append(case)
summary = {
    "gpu": "NVIDIA H100 80GB HBM3",
    "min_fwd_ratio": min(c["fwd_ratio"] for c in cases),
    "min_fwd_bwd_ratio": min(c["fwd_bwd_ratio"] for c in cases),
    "source": (
        "benchmarks/results/h200-hopper/run53-stop72/c4 (dense, sparse), stop 72, the kernels of stop 69 "
        "(tree 60c8f22): `benchmarks/hopper.py --skip portable --flex --only dense|sparse --rounds 3 --heat 1` "
        "(`OUT=DIR PART=peers HLIMIT=265 bash benchmarks/results/h200-hopper/run51-stop70/gpu.sh`), one "
        "NVIDIA H100 80GB HBM3 (driver 580.159.04, torch 2.11.0+cu130, triton 3.6.0), FA4 4.0.0b36, "
        "cuDNN through SDPA and FlexAttention's compiled Triton kernel beside ours, each half's cases in "
        "one process, timed interleaved (benchmarks/timing.py). fwd_ratio / fwd_bwd_ratio and the minima "
        "are run53's (FA4 time / our time within one call); *_runs gives run53's, then run48-stop67's, "
        "run43-stop62's, run41-stop59's, run38-stop56/call4's and run34-stop52/call7's; *_repeat (sparse "
        "cases) is run53 call 7, the sparse half again on the same machine. The H200's ratios are in "
        "../h200/fa4_ratio.json (stop 50's kernels)."),
    # the rows the head ratios come from (tests/test_fa4_ratio_summary.py recomputes them)
    "rows_from": [str((R / "c4" / half / "hopper.json").relative_to(Path.cwd())) for half in ("dense", "sparse")],
    "previous": {k: old[k] for k in ("source", "min_fwd_ratio", "min_fwd_bwd_ratio")},
    "cases": cases,
}
OUT.write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({k: summary[k] for k in ("min_fwd_ratio", "min_fwd_bwd_ratio")}))
for c in cases:
    rep = f"  repeat {c['fwd_ratio_repeat']} / {c['fwd_bwd_ratio_repeat']}" if "fwd_ratio_repeat" in c else ""
    print(f"{c['case']:50s} fwd {c['fwd_ratio_runs']}  fwd+bwd {c['fwd_bwd_ratio_runs']}{rep}")

ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
for peer in ("cudnn", "flex"):
    for p in ("fwd", "fwd+bwd"):
        rs = [ms[(c, peer, p)]["ms"] / ms[(c, "ours", p)]["ms"] for (c, i, q) in ms if i == peer and q == p]
        print(f"{peer} {p}: peer time / ours {min(rs):.3f}-{max(rs):.3f} over {len(rs)} cases")
dense = {d: ms[(f"dense N=16384 d={d}", "ours", "fwd")]["tflops"] for d in (64, 128)}
ms2 = {(r["case"], r["impl"], r["pass"]): r for r in rows2}
for c, i, p in sorted(ms):
    if p == "fwd" and "density=" in c and i == "ours":
        d = int(c.split(" d=")[1].split()[0])
        dens = float(c.split("density=")[1])
        e1 = ms[(c, "ours", "fwd")]["tflops"] / dense[d]
        e2 = ms2[(c, "ours", "fwd")]["tflops"] / dense[d]
        print(f"sparse efficiency {c:50s} {e1:.3f} / repeat {e2:.3f} (density {dens})")
