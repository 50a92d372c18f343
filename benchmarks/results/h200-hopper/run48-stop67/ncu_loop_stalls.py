"""run48 call 9's reduction of Nsight Compute's source page (``ncu -i REP --page source --csv
--print-source sass``, gzipped): the stall samples of the step loops' instructions (those a
kernel executes at least ``--min-exec`` times: 520,192 a step instruction in the dense causal
16K d=128 forward at H=16), by stall reason and by opcode, with each opcode's executions a step
(summed over both consumer warpgroups' copies of the loop).

    python benchmarks/results/h200-hopper/run48-stop67/ncu_loop_stalls.py \\
        benchmarks/results/h200-hopper/run48-stop67/call9-ncu/fwd_none.source.csv.gz ..."""
import argparse
import collections
import csv
import gzip
import re


def _num(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def load(path):
    rows = list(csv.reader(gzip.open(path, "rt")))
    head = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    names = rows[head]
    return names, [dict(zip(names, r)) for r in rows[head + 1:] if len(r) == len(names)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="gzipped source-page CSVs")
    ap.add_argument("--min-exec", type=float, default=500000.0)
    ap.add_argument("--per-step", type=float, default=520192.0, help="executions of a step instruction")
    args = ap.parse_args(argv)
    for path in args.reports:
        names, rows = load(path)
        stalls = [c for c in names if c.startswith("stall_") and "Not Issued" not in c]
        total = sum(_num(r["Warp Stall Sampling (All Samples)"]) for r in rows)
        loop = [r for r in rows if _num(r["Instructions Executed"]) >= args.min_exec]
        in_loop = sum(_num(r["Warp Stall Sampling (All Samples)"]) for r in loop)
        print(f"== {path}: {total:.0f} samples, {100 * in_loop / total:.1f}% in the step loops "
              f"({len(loop)} instructions)")
        reasons = collections.Counter()
        for r in loop:
            for c in stalls:
                reasons[c] += _num(r[c])
        s = sum(reasons.values())
        print("   stalls:", ", ".join(f"{k[6:]} {100 * v / s:.1f}%" for k, v in reasons.most_common(9)))
        samples, execs = collections.Counter(), collections.Counter()
        for r in loop:
            op = re.sub(r"^@!?U?P\w+\s+", "", r["Source"].strip()).split()[0]
            samples[op] += _num(r["Warp Stall Sampling (All Samples)"])
            execs[op] += _num(r["Instructions Executed"])
        print("   by opcode:", ", ".join(f"{k} {100 * v / in_loop:.1f}% ({execs[k] / args.per_step:.0f}/step)"
                                        for k, v in samples.most_common(14)))


if __name__ == "__main__":
    main()
