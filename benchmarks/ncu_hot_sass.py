"""The hot instructions of a kernel from Nsight Compute's source page (run24): one line per SASS
instruction of the report's first kernel, with its offset from the kernel's first instruction,
its warp-level execution count, its share of the warp stall samples and its top two stall
reasons (shares of all samples).

    ncu -i REPORT.ncu-rep --page source --csv --print-source sass > SOURCE.csv
    python benchmarks/ncu_hot_sass.py SOURCE.csv OUT.txt [--min 0.05]

``--min``: keep instructions with at least this percentage of the samples, and every
local-memory access (LDL/STL) whatever its share."""
from __future__ import annotations

import argparse
import csv


def _num(text: str) -> float:
    text = text.replace(",", "")
    try:
        return float(text)
    except ValueError:
        return 0.0


def hot_lines(path: str, min_share: float):
    rows = list(csv.reader(open(path, newline="")))
    try:
        hi = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    except StopIteration:
        raise SystemExit(f"{path}: no 'Address' header row; expected ncu's --page source --csv output")
    head = rows[hi]
    end = next((hi + 1 + i for i, r in enumerate(rows[hi + 1:]) if r and r[0] == "Kernel Name"), len(rows))
    data = [r for r in rows[hi + 1:end] if len(r) == len(head)]
    ix = {k: i for i, k in enumerate(head)}
    reasons = [k for k in head if k.startswith("stall_") and "Not Issued" not in k]
    total = sum(_num(r[ix["Warp Stall Sampling (All Samples)"]]) for r in data) or 1.0
    base = int(data[0][0], 16)
    for r in data:
        share = _num(r[ix["Warp Stall Sampling (All Samples)"]]) / total * 100
        if share < min_share and "LDL" not in r[1] and "STL" not in r[1]:
            continue
        top = sorted(reasons, key=lambda k: -_num(r[ix[k]]))[:2]
        tops = ",".join(f"{k[6:]}:{_num(r[ix[k]]) / total * 100:.2f}" for k in top if _num(r[ix[k]]))
        yield (f"{int(r[0], 16) - base:6x} ex={int(_num(r[ix['Instructions Executed']])):>10d} "
               f"s={share:5.2f}% {tops:40s} {r[1]}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source_csv")
    ap.add_argument("out")
    ap.add_argument("--min", type=float, default=0.05)
    args = ap.parse_args(argv)
    with open(args.out, "w") as f:
        for line in hot_lines(args.source_csv, args.min):
            f.write(line + "\n")


if __name__ == "__main__":
    main()
