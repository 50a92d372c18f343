"""The torch backend (``backend="torch"``, :mod:`sparseflash.blockwise`) on the CPU, against its
own version at another git revision and torch's SDPA, interleaved in one process.

    python -m benchmarks.cpu_backend --out DIR [--ref REV] [--threads T] [--rounds R] [--quick]

Impls per case (float32, B=1, H=8, d=64, block 128, causal):
* ``torch backend``: this tree's :func:`sparse_attention` with ``backend="torch"``;
* ``torch backend @REV`` (``--ref``): the same call with ``sparseflash/blockwise.py`` as it was
  at git revision REV (loaded from ``git show`` into this process), so a change is measured
  against what it replaced on the same machine and in the same run;
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``, dense with ``is_causal``
  (the whole N x N, for scale; skipped above 8K tokens).

Every torch-backend result is compared with the reference revision's (max abs difference of
the output and the three gradients, in the notes). Writes ``cpu_backend.csv``/``.json``
(with the versions, the CPU and the command) and ``cpu_backend.png`` when matplotlib is
installed.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import sparseflash as sf
from benchmarks.plots import _pyplot
from benchmarks.timing import interleaved, mean, passes, rounds_note
from sparseflash import attention as _attention

CASES = [
    ("dense causal", lambda: sf.dense(), 2048),
    ("dense causal", lambda: sf.dense(), 4096),
    ("local(2) causal", lambda: sf.local(2), 4096),
    ("local(2) causal", lambda: sf.local(2), 16384),
    ("local(1) | global_blocks(1) causal", lambda: sf.local(1) | sf.global_blocks(1), 16384),
    ("bigbird(1, 1, 2) causal", lambda: sf.bigbird(window=1, globals=1, random=2), 8192),
]
QUICK = [CASES[0], CASES[2]]
SDPA_MAX = 8192


def _load_at(rev: str):
    """``sparseflash.blockwise`` as it was at git revision ``rev``, as a separate module."""
    root = Path(__file__).resolve().parent.parent
    try:
        text = subprocess.run(["git", "show", f"{rev}:sparseflash/blockwise.py"], cwd=root,
                              capture_output=True, text=True, check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        raise SystemExit(f"--ref {rev!r}: cannot read sparseflash/blockwise.py at that revision ({e})")
    path = Path(tempfile.mkdtemp()) / "blockwise_ref.py"
    path.write_text(text.replace("from .layout import", "from sparseflash.layout import")
                    .replace("from .philox import", "from sparseflash.philox import"))
    spec = importlib.util.spec_from_file_location("sparseflash._blockwise_ref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _backend_from(module):
    """``sparse_attention``'s torch backend taken from ``module`` while held."""
    saved = _attention.blockwise_forward, _attention.blockwise_backward
    _attention.blockwise_forward, _attention.blockwise_backward = module.blockwise_forward, module.blockwise_backward
    try:
        yield
    finally:
        _attention.blockwise_forward, _attention.blockwise_backward = saved


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timer(fn, reps: int = 1):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) * 1e3 / reps, reps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--ref", default=None, help="git revision whose blockwise.py to time beside this tree's")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="two small cases only")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ref = _load_at(args.ref) if args.ref else None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    B, H, d, bs = 1, 8, 64, 128
    rows = []
    for name, make, N in (QUICK if args.quick else CASES):
        g = torch.Generator().manual_seed(0)
        q, k, v, do = (torch.randn(B, H, N, d, generator=g) for _ in range(4))
        layout = sf.compile(make(), N, block_size=bs, causal=True, num_heads=H)
        # FLOPs on computed blocks only: 4 d per token pair of the stored blocks (nnz counts
        # every head's)
        flops = 4.0 * B * d * layout.nnz * bs * bs

        def ours(q, k, v, layout=layout):
            return sf.sparse_attention(q, k, v, layout, backend="torch")

        jobs = [("torch backend", passes(ours, q, k, v, do), contextlib.nullcontext)]
        if ref is not None:
            jobs.append((f"torch backend @{args.ref}", passes(ours, q, k, v, do), lambda: _backend_from(ref)))
        if N <= SDPA_MAX:
            def sdpa(q, k, v):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            jobs.append(("sdpa (dense causal)", passes(sdpa, q, k, v, do), contextlib.nullcontext))
        # agreement with the reference revision (or with itself), output and gradients
        notes = {}
        if ref is not None:
            qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
            o1 = ours(qg, kg, vg)
            g1 = torch.autograd.grad(o1, (qg, kg, vg), do)
            with _backend_from(ref):
                o2 = ours(qg, kg, vg)
                g2 = torch.autograd.grad(o2, (qg, kg, vg), do)
            diff = max((a - b).abs().max().item() for a, b in zip((o1, *g1), (o2, *g2)))
            notes["torch backend"] = f"max|diff| vs @{args.ref} (out, dq, dk, dv): {diff:.2e}"
        res = interleaved(_timer, "cpu", jobs, rounds=args.rounds, heat_s=0.0)
        for impl, (times, _) in res.items():
            for mode, ts in zip(("fwd", "fwd+bwd"), times):
                ms = mean(ts)
                f = (flops if mode == "fwd" else 3.5 * flops) if impl.startswith("torch") else None
                rows.append(dict(case=f"{name}, N={N}", impl=impl, mode=mode, ms=round(ms, 2),
                                 gflops=round(f / ms / 1e6, 2) if f else None,
                                 note="; ".join(x for x in (rounds_note(ts), notes.get(impl, "")) if x)))
                print(f"{name:38s} N={N:6d} {impl:28s} {mode:8s} {ms:10.1f} ms", flush=True)
    meta = dict(command="python -m benchmarks.cpu_backend " + " ".join(argv if argv is not None else sys.argv[1:]),
                torch=torch.__version__, sparseflash=sf.__version__, python=platform.python_version(),
                cpu=_cpu_model(), cores=os.cpu_count(),
                threads=torch.get_num_threads(), dtype="float32", B=B, H=H, d=d, block_size=bs,
                flops="4 d per token pair of the stored blocks (forward); 3.5x that forward+backward, "
                      "torch backend rows only",
                peak_memory="not measured (CPU)")
    with open(out_dir / "cpu_backend.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out_dir / "cpu_backend.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    _plot(rows, meta, out_dir / "cpu_backend.png")
    return 0


def _plot(rows, meta, path: Path) -> None:
    try:
        plt = _pyplot()
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    cases = list(dict.fromkeys(r["case"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, mode in zip(axes, ("fwd", "fwd+bwd")):
        width = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            ys = [next((r["ms"] for r in rows if r["case"] == c and r["impl"] == impl and r["mode"] == mode), 0)
                  for c in cases]
            ax.bar([x + i * width for x in range(len(cases))], ys, width, label=impl)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(cases))])
        ax.set_xticklabels([c.replace(", N=", "\nN=").replace(" | ", " |\n") for c in cases], fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"{mode} ({meta['cores']} cores, {meta['threads']} threads, float32, H=8, d=64)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
