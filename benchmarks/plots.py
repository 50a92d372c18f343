"""Plots of a results directory written by ``python -m benchmarks.run``: one PNG per suite.

    python -m benchmarks.plots RESULTS_DIR [--out DIR]

* ``dense.png``    TFLOP/s bars of every implementation, forward and forward+backward;
* ``sparse.png``   time against density, ours and FlexAttention on the same block mask, with
  the dense times and the time-proportional-to-density line for reference;
* ``scaling.png``  runtime and peak memory against N (FlashAttention paper, Figure 3);
* ``compile.png``  mask build time against N.

matplotlib is imported inside the plotting functions, so the harness runs without it.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

IMPL_ORDER = ("ours", "flex", "fa4", "sdpa_cudnn", "sdpa_flash", "eager")
IMPL_LABELS = {"ours": "sparseflash", "flex": "FlexAttention", "fa4": "FlashAttention-4",
               "sdpa_flash": "SDPA flash (FA2)", "sdpa_cudnn": "SDPA cuDNN", "eager": "eager"}
IMPL_COLORS = {"ours": "tab:red", "flex": "tab:blue", "fa4": "tab:purple", "sdpa_cudnn": "tab:green",
               "sdpa_flash": "tab:orange", "eager": "tab:gray"}
PASS_STYLES = {"fwd": "-", "fwd+bwd": "--"}


def load(results_dir) -> Tuple[dict, List[dict]]:
    """(meta, rows) of ``results_dir/results.json`` (or of that file itself)."""
    path = Path(results_dir)
    if path.is_dir():
        path = path / "results.json"
    data = json.loads(path.read_text())
    return data["meta"], data["rows"]


def ok_rows(rows: Sequence[dict], **match) -> List[dict]:
    """Rows with status ok, a finite time, and every ``field=value`` of ``match``."""
    out = []
    for r in rows:
        if r.get("status") != "ok" or not _finite(r.get("ms")):
            continue
        if all(r.get(k) == v for k, v in match.items()):
            out.append(r)
    return out


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and x is not None and math.isfinite(x)


def _subtitle(meta: dict) -> str:
    return (f"{meta.get('gpu') or 'CPU'} · {meta.get('dtype')} · torch {meta.get('torch')} · "
            f"triton {meta.get('triton')} · {meta.get('date_utc', '')[:10]} · {meta.get('mode')}")


def _tokens(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10}K"
    return str(n)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ----------------------------------------------------------------------------- dense
def plot_dense(meta: dict, rows: Sequence[dict], path: Path) -> Optional[Path]:
    dense = [r for r in rows if r.get("suite") == "dense"]
    if not ok_rows(dense):
        return None
    plt = _pyplot()
    groups = sorted({(r["head_dim"], r["causal"], r["seq_len"]) for r in dense},
                    key=lambda g: (-g[0], g[1], g[2]))
    impls = [i for i in IMPL_ORDER if ok_rows(dense, impl=i)]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.3 * len(groups) + 2), 8), sharex=True)
    width = 0.8 / max(1, len(impls))
    for ax, pass_name in zip(axes, ("fwd", "fwd+bwd")):
        for j, impl in enumerate(impls):
            xs, ys = [], []
            for x, (d, causal, n) in enumerate(groups):
                hit = ok_rows(dense, impl=impl, head_dim=d, causal=causal, seq_len=n, **{"pass": pass_name})
                if hit:
                    xs.append(x + (j - (len(impls) - 1) / 2) * width)
                    ys.append(hit[0]["tflops"])
            bars = ax.bar(xs, ys, width, label=IMPL_LABELS.get(impl, impl), color=IMPL_COLORS.get(impl))
            if impl == "ours":
                ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_ylabel(f"{pass_name} TFLOP/s")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(range(len(groups)))
    axes[-1].set_xticklabels([f"d={d}\n{'causal' if c else 'full'}\nN={_tokens(n)}" for d, c, n in groups],
                             fontsize=8)
    axes[0].legend(ncol=len(impls), fontsize=8, loc="upper left")
    r = dense[0]
    axes[0].set_title(f"Dense attention, B·N = {_tokens(r['batch'] * r['seq_len'])}, H·d = {r['heads'] * r['head_dim']}"
                      " (FLOPs: 4·B·H·N²·d, halved if causal)\n" + _subtitle(meta), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- sparse
def plot_sparse(meta: dict, rows: Sequence[dict], path: Path) -> Optional[Path]:
    sparse = [r for r in rows if r.get("suite") == "sparse"]
    if not ok_rows(sparse):
        return None
    plt = _pyplot()
    lens = sorted({r["seq_len"] for r in sparse})
    families = [f for f in ("local", "butterfly", "bigbird", "strided")
                if any(r["family"] == f for r in sparse)]
    families += sorted({r["family"] for r in sparse} - set(families) - {"dense"})
    fig, axes = plt.subplots(len(lens), max(1, len(families)), squeeze=False,
                             figsize=(3.6 * max(1, len(families)), 3.3 * len(lens)))
    for row_i, n in enumerate(lens):
        dense_ours = {p: ok_rows(sparse, family="dense", impl="ours", seq_len=n, **{"pass": p}) for p in PASS_STYLES}
        for col, family in enumerate(families):
            ax = axes[row_i][col]
            for impl in ("ours", "flex"):
                for p, style in PASS_STYLES.items():
                    pts = sorted((r["density"], r["ms"]) for r in
                                 ok_rows(sparse, family=family, impl=impl, seq_len=n, **{"pass": p}))
                    if pts:
                        ax.plot(*zip(*pts), style, marker="o", ms=3, color=IMPL_COLORS[impl],
                                label=f"{IMPL_LABELS[impl]} {p}")
            for p, style in PASS_STYLES.items():
                for impl in ("ours", "sdpa_cudnn"):
                    ref = ok_rows(sparse, family="dense", impl=impl, seq_len=n, **{"pass": p})
                    if ref:
                        ax.axhline(ref[0]["ms"], ls=":", lw=0.8, color=IMPL_COLORS[impl])
                if dense_ours[p]:
                    xs = [0.01, 1.0]
                    ax.plot(xs, [dense_ours[p][0]["ms"] * x for x in xs], ls=(0, (1, 3)), lw=0.8,
                            color="black", label="ours dense × density" if p == "fwd" else None)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{family}, N={_tokens(n)}", fontsize=9)
            ax.set_xlabel("density (computed blocks)", fontsize=8)
            ax.grid(alpha=0.3, which="both")
            if col == 0:
                ax.set_ylabel("ms")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.suptitle("Block-sparse attention: time vs density, same block mask for ours and Flex "
                 "(dotted: dense ours / cuDNN)\n" + _subtitle(meta), fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- scaling
def plot_scaling(meta: dict, rows: Sequence[dict], path: Path) -> Optional[Path]:
    scaling = [r for r in rows if r.get("suite") == "scaling"]
    if not ok_rows(scaling):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    series = sorted({(r["family"], r["impl"]) for r in scaling},
                    key=lambda s: (s[0] != "dense-causal", s[0], IMPL_ORDER.index(s[1]) if s[1] in IMPL_ORDER else 9))
    markers = {"dense-causal": "o", "local": "s", "bigbird": "^"}
    for col, p in enumerate(("fwd", "fwd+bwd")):
        for family, impl in series:
            pts = sorted((r["seq_len"], r["ms"], r["peak_mem_gib"]) for r in
                         ok_rows(scaling, family=family, impl=impl, **{"pass": p}))
            failed = sorted(r["seq_len"] for r in scaling if r["family"] == family and r["impl"] == impl
                            and r["pass"] == p and r["status"] == "oom")
            style = dict(color=IMPL_COLORS.get(impl), marker=markers.get(family, "d"), ms=4,
                         ls="-" if family == "dense-causal" else "--",
                         label=f"{IMPL_LABELS.get(impl, impl)}, {family}")
            if pts:
                axes[0][col].plot([x[0] for x in pts], [x[1] for x in pts], **style)
                mem = [(x[0], x[2]) for x in pts if _finite(x[2])]
                if mem:
                    axes[1][col].plot(*zip(*mem), **style)
            for n in failed[:1]:
                for ax in (axes[0][col], axes[1][col]):
                    ax.annotate("OOM", (n, 1), xycoords=("data", "axes fraction"), ha="center", va="top",
                                fontsize=7, color=IMPL_COLORS.get(impl))
        axes[0][col].set_title(f"runtime, {p}", fontsize=9)
        axes[1][col].set_title(f"peak memory, {p} (inputs included)", fontsize=9)
        axes[0][col].set_ylabel("ms")
        axes[1][col].set_ylabel("GiB")
    for ax in axes.ravel():
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    if not any(_finite(r.get("peak_mem_gib")) for r in scaling):
        for ax in axes[1]:
            ax.text(0.5, 0.5, "peak memory is measured on CUDA only", transform=ax.transAxes, ha="center")
    r = scaling[0]
    fig.suptitle(f"Scaling, B={r['batch']}, H={r['heads']}, d={r['head_dim']} (FlashAttention paper Figure 3)\n"
                 f"{_subtitle(meta)}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- compile
def plot_compile(meta: dict, rows: Sequence[dict], path: Path) -> Optional[Path]:
    comp = [r for r in rows if r.get("suite") == "compile" and r.get("seq_len")]
    if not ok_rows(comp):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for impl in sorted({r["impl"] for r in comp}):
        pts = sorted((r["seq_len"], r["ms"]) for r in ok_rows(comp, impl=impl))
        if pts:
            ax.plot(*zip(*pts), marker="o", label=impl)
        for r in comp:
            if r["impl"] == impl and r["status"] == "oom":
                ax.annotate(f"OOM: {impl}", (r["seq_len"], 1), xycoords=("data", "axes fraction"),
                            ha="center", va="top", fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N")
    ax.set_ylabel("ms (median)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(f"Building the block mask of {comp[0]['pattern']}\n{_subtitle(meta)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


PLOTS = {"dense": plot_dense, "sparse": plot_sparse, "scaling": plot_scaling, "compile": plot_compile}


def make_all(results_dir, out_dir=None) -> List[Path]:
    """Write every plot the results support; returns the paths written."""
    meta, rows = load(results_dir)
    out = Path(out_dir) if out_dir else Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in PLOTS.items():
        path = fn(meta, rows, out / f"{name}.png")
        if path is not None:
            written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", type=Path)
    p.add_argument("--out", type=Path, default=None, help="where the PNGs go (default: results_dir)")
    args = p.parse_args(argv)
    try:
        for path in make_all(args.results_dir, args.out):
            print(f"wrote {path}")
    except ImportError as exc:
        print(f"plots need matplotlib ({exc}): pip install matplotlib")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
