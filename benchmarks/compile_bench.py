"""Mask-compile benchmark: ``sparseflash.compile`` time (first call, uncached) and peak memory.

Issue 2's targets, on a 2-core CPU, block 128:

* ``bigbird(window=3, globals=2, random=3) | strided(64)`` at 131,072 tokens: <= 2 ms;
* the same at 1,048,576 tokens: <= 50 ms.

Each case runs in a fresh Python process: import sparseflash, warm the code paths up on a
small, different grid, then time ``compile(pattern, ..., cache=False)`` ``--repeats`` times
(the first call and the median are reported), time one cached call, and finally measure the
peak Python allocation of one more compile with tracemalloc (separately, since tracing slows
the code down). ``peak bytes / nnz`` staying flat as N grows is the O(nnz) claim.
Process CPU time and minor page faults are recorded beside wall time: CPU time is barely
moved by other processes on the cores, and the faults show what a first call pays to touch
fresh memory (the gap between its time and the median).

    PYTHONPATH=. python -m benchmarks.compile_bench [--out out/compile_bench] [--quick]

From the harness: ``python -m benchmarks.run --suite compile`` calls
:func:`run_compile_suite`. Writes ``compile_bench.json`` (rows plus environment) and
``compile_bench.csv`` to the output folder and prints a table.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

TARGET_PATTERN = "bigbird(window=3, globals=2, random=3) | strided(64)"


@dataclass(frozen=True)
class Case:
    name: str
    pattern: str  # the text form, parsed in the worker
    seq_len: int
    block_size: int = 128
    causal: bool = False
    num_heads: int = 1
    target_ms: Optional[float] = None


def cases(quick: bool = False) -> List[Case]:
    out = [
        Case("target-128K", TARGET_PATTERN, 131072, target_ms=2.0),
        Case("target-1M", TARGET_PATTERN, 1048576, target_ms=50.0),
        Case("target-16K", TARGET_PATTERN, 16384),
        Case("target-256K", TARGET_PATTERN, 262144),
        Case("target-512K", TARGET_PATTERN, 524288),
        Case("target-1M-causal", TARGET_PATTERN, 1048576, causal=True),
        Case("local-1M", "local(3)", 1048576),
        Case("longformer-1M-causal", "longformer(window=4, globals=2)", 1048576, causal=True),
        Case("butterfly-1M", "butterfly()", 1048576),
        Case("fixed-1M", "fixed(16, summary=2)", 1048576),
        Case("per_head8-128K", "per_head(" + ", ".join(f"local({w}) | strided({8 * (w + 1)})" for w in range(8)) + ")",
             131072, num_heads=8),
        Case("dense-64K-causal", "dense()", 65536, causal=True),
        Case("complement-128K", "~local(3)", 131072),  # O(grid) by design: ~ touches every block
    ]
    if quick:
        keep = {"target-128K", "target-1M", "local-1M", "dense-64K-causal"}
        out = [c for c in out if c.name in keep]
    return out


# ---------------------------------------------------------------------------- worker (fresh process)
def _worker(case: Case, repeats: int) -> dict:
    t_import = time.perf_counter()
    import resource
    import tracemalloc

    import numpy as np

    import sparseflash as sf

    import_ms = (time.perf_counter() - t_import) * 1e3
    pattern = sf.parse(case.pattern)
    kw = dict(block_size=case.block_size, causal=case.causal, num_heads=case.num_heads)
    # Warm-up: the same code paths (numpy, scipy.sparse, the pattern's own) on a small grid.
    sf.compile(pattern, 64 * case.block_size + 1, kv_len=48 * case.block_size, cache=False, **kw)

    # Wall time is the target; process CPU time is reported too, since it is barely moved by
    # other processes competing for the cores (the compiler is single-threaded numpy).
    # Minor page faults show what the first call pays for touching fresh memory.
    times, cpu_times, faults = [], [], []
    for _ in range(repeats):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c0, t0 = time.process_time(), time.perf_counter()
        layout = sf.compile(pattern, case.seq_len, cache=False, **kw)
        times.append((time.perf_counter() - t0) * 1e3)
        cpu_times.append((time.process_time() - c0) * 1e3)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    sf.compile(pattern, case.seq_len, **kw)  # fill the cache
    t0 = time.perf_counter()
    sf.compile(pattern, case.seq_len, **kw)
    cached_us = (time.perf_counter() - t0) * 1e6

    del layout
    tracemalloc.start()
    layout = sf.compile(pattern, case.seq_len, cache=False, **kw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    table_bytes = sum(getattr(layout, n).nbytes for n in ("fwd_ptr", "fwd_idx", "fwd_nfull", "bwd_ptr", "bwd_idx", "bwd_nfull"))
    stored = int(layout.fwd_idx.size)
    return {
        **asdict(case),
        "nq": layout.num_q_blocks, "nk": layout.num_kv_blocks, "nnz": layout.nnz,
        "stored_blocks": stored, "density": layout.density, "partial": layout.num_partial,
        "first_ms": times[0], "median_ms": statistics.median(times), "min_ms": min(times),
        "first_cpu_ms": cpu_times[0], "median_cpu_ms": statistics.median(cpu_times),
        "first_page_faults": faults[0], "median_page_faults": statistics.median(faults),
        "repeats": repeats, "cached_us": cached_us, "import_ms": import_ms,
        "peak_mib": peak / 2**20, "peak_bytes_per_block": peak / max(stored, 1),
        "table_mib": table_bytes / 2**20,
        "meets_target": None if case.target_ms is None else statistics.median(times) <= case.target_ms,
        "numpy": np.__version__,
    }


def _run_case_in_fresh_process(case: Case, repeats: int) -> dict:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [sys.executable, "-m", "benchmarks.compile_bench", "--worker", json.dumps(asdict(case)),
           "--repeats", str(repeats)]
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        return {**asdict(case), "error": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- suite
COLUMNS = ["name", "seq_len", "causal", "num_heads", "nq", "nnz", "density", "first_ms", "median_ms",
           "min_ms", "first_cpu_ms", "median_cpu_ms", "first_page_faults",
           "median_page_faults", "cached_us", "peak_mib", "peak_bytes_per_block", "target_ms", "meets_target"]


def environment() -> dict:
    import numpy
    import scipy

    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "machine": platform.machine(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": numpy.__version__, "scipy": scipy.__version__,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def format_table(rows: List[dict]) -> str:
    head = f"{'case':<22} {'tokens':>9} {'grid':>6} {'nnz':>9} {'density':>8} {'first ms':>9} {'median ms':>9} " \
           f"{'cpu ms':>7} {'cached us':>9} {'peak MiB':>8} {'B/block':>7}  target"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:<22} ERROR: {r['error']}")
            continue
        target = "" if r["target_ms"] is None else \
            f"<= {r['target_ms']:g} ms {'ok' if r['meets_target'] else 'MISSED'}"
        lines.append(f"{r['name']:<22} {r['seq_len']:>9} {r['nq']:>6} {r['nnz']:>9} {r['density']:>8.4f} "
                     f"{r['first_ms']:>9.3f} {r['median_ms']:>9.3f} {r['median_cpu_ms']:>7.3f} {r['cached_us']:>9.1f} "
                     f"{r['peak_mib']:>8.2f} {r['peak_bytes_per_block']:>7.0f}  {target}")
    return "\n".join(lines)


def run_compile_suite(out_dir, quick: bool = False, repeats: Optional[int] = None) -> dict:
    """Run every case in a fresh process; write compile_bench.json / .csv to ``out_dir``;
    print a table; return ``{"environment": ..., "rows": [...]}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    repeats = repeats or (7 if quick else 21)
    rows = []
    for case in cases(quick):
        rows.append(_run_case_in_fresh_process(case, repeats))
        print(f"  {case.name}: " + (f"median {rows[-1]['median_ms']:.3f} ms" if "error" not in rows[-1]
                                    else f"ERROR {rows[-1]['error']}"), flush=True)
    result = {"suite": "compile", "target_pattern": TARGET_PATTERN, "environment": environment(), "rows": rows}
    (out_dir / "compile_bench.json").write_text(json.dumps(result, indent=2))
    with open(out_dir / "compile_bench.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS + ["stored_blocks", "partial", "table_mib", "block_size",
                                                    "pattern", "repeats", "import_ms", "error"],
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(format_table(rows))
    print(f"wrote {out_dir / 'compile_bench.json'} and compile_bench.csv")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("out/compile_bench"), help="output folder (default: out/compile_bench, git-ignored)")
    p.add_argument("--quick", action="store_true", help="the two target cases and two others")
    p.add_argument("--repeats", type=int, default=None, help="timed uncached compiles per case (default 21, quick 7)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # JSON of one Case: run it here, print a JSON row
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(Case(**json.loads(args.worker)), args.repeats or 21)))
        return 0
    result = run_compile_suite(args.out, quick=args.quick, repeats=args.repeats)
    return 1 if any("error" in r for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
