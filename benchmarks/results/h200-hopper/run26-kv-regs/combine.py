"""run26's summary: benchmarks/results/h200/fa4_ratio.json and hopper.png from run24's peers
runs (calls 6 and 7: the d=128 cases, whose kernels are unchanged since) with the seven d=64
cases replaced by run26 call 1's peers run (the dK/dV kernel of tree 4a23dcc: 128-query steps,
dQ split by rows, K and V as register operands; its ours-HOPPER_BWD_KV_REGS=False rows, K and V
in shared memory, timed beside), and the markdown table of docs/hopper.md with run25's ratios
of the d=64 cases beside them. Run from the repository root:
``python benchmarks/results/h200-hopper/run26-kv-regs/combine.py``."""
import json
import sys
from pathlib import Path

sys.path.insert(0, ".")
from benchmarks import hopper, real_batches as rb  # noqa: E402

R = Path(__file__).resolve().parent
RUN24, RUN25 = R.parent / "run24-bwd-profile", R.parent / "run25-d64-steps"
SHARED = "ours-HOPPER_BWD_KV_REGS=False"


def rows(path):
    return json.loads(path.read_text())["rows"]


def ms_of(rs):
    return {(r["case"], r["impl"], r["pass"]): r for r in rs}


call1 = rows(R / "call1/peers/hopper.json")
new = [r for r in call1 if r["impl"] != SHARED]
new_cases = {r["case"] for r in new}
old = rows(RUN24 / "call6/peers/hopper.json") + rows(RUN24 / "call7/peers/hopper.json")
run25 = [json.loads(line) for line in (RUN25 / "call1/peers.log").read_text().splitlines()
         if line.startswith('{"suite"')]
main_rows = [r for r in old if r["case"] not in new_cases] + new
assert len(new_cases) == 7 and all(" d=64" in c for c in new_cases), new_cases
rb.ROWS[:] = main_rows
hopper.ROWS = rb.ROWS
summary = hopper.ratios("NVIDIA H200")
summary["source"] = ("benchmarks/results/h200-hopper: the d=128 cases from run24-bwd-profile (call6; call7 "
                     "for local(2) 16K, the 64K and the 34-43% cases; tree f0c1f2a), the d=64 cases from "
                     "run26-kv-regs/call1 (tree 4a23dcc); `hopper.py --skip portable --heat 4 --cases ...`, "
                     "one H200, FA4 4.0.0b36; each call's impls in one process, timed interleaved after a "
                     "heat phase (benchmarks/timing.py); each ratio FA4 time / our time from one run")
out = Path("benchmarks/results/h200")
(out / "fa4_ratio.json").write_text(json.dumps(summary, indent=1) + "\n")
hopper.plot(main_rows, out / "hopper.png",
            title="ours vs FA4 / cuDNN, bf16, same tables, one H200 (run24 d=128, run26 d=64)")

m, before, c1 = ms_of(main_rows), ms_of(run25), ms_of(call1)


def ratio(t, case, p, a="fa4", b="ours"):
    x, y = t.get((case, a, p)), t.get((case, b, p))
    return x["ms"] / y["ms"] if x and y else None


print("| case | ours fwd | FA4 fwd | cuDNN fwd | FA4÷ours fwd | ours fwd+bwd | FA4 fwd+bwd | cuDNN fwd+bwd "
      "| FA4÷ours fwd+bwd | run25 fwd / fwd+bwd |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for case in dict.fromkeys(r["case"] for r in main_rows):
    tf = lambda impl, p: (m.get((case, impl, p)) or {}).get("tflops") or "–"  # noqa: E731
    rep = f"{ratio(before, case, 'fwd'):.3f} / {ratio(before, case, 'fwd+bwd'):.3f}" if case in new_cases else "same run"
    print(f"| {case} | {tf('ours', 'fwd')} | {tf('fa4', 'fwd')} | {tf('cudnn', 'fwd')} | "
          f"{ratio(m, case, 'fwd'):.3f} | {tf('ours', 'fwd+bwd')} | {tf('fa4', 'fwd+bwd')} | "
          f"{tf('cudnn', 'fwd+bwd')} | {ratio(m, case, 'fwd+bwd'):.3f} | {rep} |")
print("\ncuDNN time / ours:")
for case in dict.fromkeys(r["case"] for r in main_rows):
    if (case, "cudnn", "fwd") in m:
        print(f"  {case}: fwd {ratio(m, case, 'fwd', 'cudnn'):.3f}, fwd+bwd {ratio(m, case, 'fwd+bwd', 'cudnn'):.3f}")
print("\nK and V in shared memory ÷ in registers (call 1, ms, fwd+bwd):")
for case in sorted(new_cases, key=list(dict.fromkeys(r["case"] for r in call1)).index):
    print(f"  {case}: {c1[(case, SHARED, 'fwd+bwd')]['ms']:.4f} / {c1[(case, 'ours', 'fwd+bwd')]['ms']:.4f} = "
          f"{ratio(c1, case, 'fwd+bwd', SHARED):.3f} (fwd {ratio(c1, case, 'fwd', SHARED):.3f})")
