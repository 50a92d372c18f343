"""Print an A/B table from a ``hopper.py`` (or ``real_batches``-style) JSON: per case and pass,
``ours``'s ms and TFLOP/s and, for each other impl, its ms and ``ours time / its time`` (above
1: that impl is faster).

    python -m benchmarks.ab_table OUT/hopper.json [IMPL ...] [--pass fwd]

With no IMPL every impl but ``ours`` in the file. The device-call scripts of run13 and before
pasted this loop inline; later ones call this instead.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def table(rows, impls=None, passes=("fwd", "fwd+bwd"), base="ours"):
    """Lines of the A/B table of ``rows`` (dicts with case, impl, pass, ms, tflops)."""
    ms = {(r["case"], r["impl"], r["pass"]): r for r in rows}
    impls = impls or [i for i in dict.fromkeys(r["impl"] for r in rows) if i != base]
    lines = []
    for case in dict.fromkeys(r["case"] for r in rows):
        for p in passes:
            ref = ms.get((case, base, p))
            if ref is None:
                continue
            line = f"{case[:48]:48s} {p:8s} {base} {ref['ms']:.3f} ({ref.get('tflops') or 0:.0f})"
            for impl in impls:
                other = ms.get((case, impl, p))
                if other and other["ms"] == other["ms"] and other["ms"] > 0:
                    line += f" | {impl} {other['ms']:.3f} ({ref['ms'] / other['ms']:.3f}x)"
            lines.append(line)
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path)
    ap.add_argument("impls", nargs="*")
    ap.add_argument("--pass", dest="passes", action="append", choices=("fwd", "fwd+bwd"))
    args = ap.parse_args(argv)
    rows = json.loads(args.json.read_text())["rows"]
    print("\n".join(table(rows, args.impls or None, tuple(args.passes or ("fwd", "fwd+bwd")))))


if __name__ == "__main__":
    main()
