"""run24's summary: benchmarks/results/h200/fa4_ratio.json and hopper.png from calls 6 and 7,
the two peers runs on the final tree, and the markdown table of docs/hopper.md (with run23's
ratios of the same cases beside them). Run from the repository root:
``python benchmarks/results/h200-hopper/run24-bwd-profile/combine.py``."""
import json
import sys
from pathlib import Path

sys.path.insert(0, ".")
from benchmarks import hopper, real_batches as rb  # noqa: E402

R = Path(__file__).resolve().parent
MAIN = {"dense": R / "call6/peers/hopper.json", "sparse": R / "call7/peers/hopper.json"}
RUN23 = R.parent / "run23-interleaved"
REPEATS = [RUN23 / "call8/dense/hopper.json", RUN23 / "call7/sparse/hopper.json"]


def rows(path):
    return json.loads(path.read_text())["rows"]


def ms_of(rs):
    return {(r["case"], r["impl"], r["pass"]): r for r in rs}


main_rows = rows(MAIN["dense"]) + rows(MAIN["sparse"])
rb.ROWS[:] = main_rows
hopper.ROWS = rb.ROWS
summary = hopper.ratios("NVIDIA H200")
summary["source"] = ("benchmarks/results/h200-hopper/run24-bwd-profile: the d=128 cases but local(2) 16K "
                     "from call6, the others from call7 (`hopper.py --skip portable --heat 4 --cases ...`, "
                     "tree f0c1f2a, one H200, FA4 4.0.0b36); each call's impls in one process, timed "
                     "interleaved after a heat phase (benchmarks/timing.py); each ratio FA4 time / our "
                     "time from one run")
out = Path("benchmarks/results/h200")
(out / "fa4_ratio.json").write_text(json.dumps(summary, indent=1) + "\n")
hopper.plot(main_rows, out / "hopper.png",
            title="ours vs FA4 / cuDNN, bf16, same tables, one H200 (run24, interleaved timing)")

m = ms_of(main_rows)
reps = [ms_of(rows(p)) for p in REPEATS]


def ratio(t, case, p):
    a, b = t.get((case, "fa4", p)), t.get((case, "ours", p))
    return a["ms"] / b["ms"] if a and b else None


dense_tf = {d: m[(f"dense N=16384 d={d}", "ours", "fwd")]["tflops"] for d in (64, 128)}
print("| case | ours fwd | FA4 fwd | cuDNN fwd | FA4÷ours fwd | ours fwd+bwd | FA4 fwd+bwd | cuDNN fwd+bwd "
      "| FA4÷ours fwd+bwd | run23 fwd / fwd+bwd |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for case in dict.fromkeys(r["case"] for r in main_rows):
    tf = lambda impl, p: (m.get((case, impl, p)) or {}).get("tflops") or "–"  # noqa: E731
    rep = [f"{ratio(t, case, 'fwd'):.2f} / {ratio(t, case, 'fwd+bwd'):.2f}" for t in reps
           if ratio(t, case, "fwd")]
    print(f"| {case} | {tf('ours', 'fwd')} | {tf('fa4', 'fwd')} | {tf('cudnn', 'fwd')} | "
          f"{ratio(m, case, 'fwd'):.3f} | {tf('ours', 'fwd+bwd')} | {tf('fa4', 'fwd+bwd')} | "
          f"{tf('cudnn', 'fwd+bwd')} | {ratio(m, case, 'fwd+bwd'):.3f} | {'; '.join(rep) or '–'} |")
print("\nsparse efficiency (ours sparse fwd TFLOP/s / ours dense 16K fwd TFLOP/s, same d):")
for case in dict.fromkeys(r["case"] for r in main_rows):
    if "density" in case:
        d = int(case.split(" d=")[1].split()[0])
        print(f"  {case}: {m[(case, 'ours', 'fwd')]['tflops'] / dense_tf[d]:.2f}")
print("\ncuDNN time / ours:")
for case in dict.fromkeys(r["case"] for r in main_rows):
    if (case, "cudnn", "fwd") in m:
        print(f"  {case}: fwd {m[(case, 'cudnn', 'fwd')]['ms'] / m[(case, 'ours', 'fwd')]['ms']:.3f}, "
              f"fwd+bwd {m[(case, 'cudnn', 'fwd+bwd')]['ms'] / m[(case, 'ours', 'fwd+bwd')]['ms']:.3f}")
