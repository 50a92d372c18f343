"""The issue-4 targets, evaluated from a results directory, and docs/benchmarks.md filled from it.

    python -m benchmarks.report RESULTS_DIR [--doc docs/benchmarks.md] [--print]

Every MET / NOT MET below is computed from the rows of ``results.json`` (and from
``calibration.json`` beside it, which ``python -m benchmarks.calibrate`` writes); nothing is
hard-coded. In the document only the part between the ``BEGIN GENERATED`` and
``END GENERATED`` markers is replaced, so prose written around it stays.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from benchmarks.plots import IMPL_LABELS, IMPL_ORDER, PLOTS, _finite, _tokens, load, ok_rows

BEGIN = "<!-- BEGIN GENERATED: python -m benchmarks.report; edits inside are overwritten -->"
END = "<!-- END GENERATED -->"
MET, NOT_MET, NO_DATA = "MET", "NOT MET", "NO DATA"


@dataclass
class Target:
    """One line of the issue-4 targets table, with the cases behind it."""

    what: str
    requirement: str
    status: str = NO_DATA
    measured: str = "-"
    details: List[str] = field(default_factory=list)


def _ratio_status(ratios: Sequence[Tuple[float, str]], need: float) -> Tuple[str, str]:
    """(status, summary) of ``ratios`` = [(value, label)] against ``value >= need``."""
    if not ratios:
        return NO_DATA, "-"
    worst = min(ratios)
    met = sum(v >= need for v, _ in ratios)
    status = MET if met == len(ratios) else NOT_MET
    return status, f"worst {worst[0]:.2f}x ({worst[1]}), {met}/{len(ratios)} cases >= {need:g}x"


def _one(rows, **match) -> Optional[dict]:
    hit = ok_rows(rows, **match)
    return hit[0] if hit else None


# ----------------------------------------------------------------------------- targets
def dense_targets(rows: Sequence[dict]) -> List[Target]:
    dense = [r for r in rows if r.get("suite") == "dense"]
    groups = sorted({(r["head_dim"], r["seq_len"], r["causal"]) for r in dense})
    out = []
    for causal in (False, True):
        kind = "causal" if causal else "non-causal"
        fwd, fb, stretch = [], [], []
        for d, n, c in groups:
            if c != causal:
                continue
            m = dict(head_dim=d, seq_len=n, causal=c)
            ours_f, flex_f = _one(dense, impl="ours", **m, **{"pass": "fwd"}), _one(dense, impl="flex", **m, **{"pass": "fwd"})
            ours_b, flex_b = (_one(dense, impl="ours", **m, **{"pass": "fwd+bwd"}),
                              _one(dense, impl="flex", **m, **{"pass": "fwd+bwd"}))
            cudnn_f = _one(dense, impl="sdpa_cudnn", **m, **{"pass": "fwd"})
            label = f"d={d} N={_tokens(n)}"
            if ours_f and flex_f:
                fwd.append((ours_f["tflops"] / flex_f["tflops"], label))
            if ours_b and flex_b:
                fb.append((ours_b["tflops"] / flex_b["tflops"], label))
            if ours_f and cudnn_f:
                stretch.append((ours_f["tflops"] / cudnn_f["tflops"], label))
        for what, ratios, need in ((f"Dense {kind}: forward vs FlexAttention", fwd, 1.05),
                                   (f"Dense {kind}: forward+backward vs FlexAttention", fb, 1.0),
                                   (f"Dense {kind} (stretch): forward vs cuDNN SDPA", stretch, 0.9)):
            status, measured = _ratio_status(ratios, need)
            out.append(Target(what, f"TFLOP/s ratio >= {need:g}x", status, measured,
                              [f"{label}: {v:.2f}x" for v, label in ratios]))
    return out


def sparse_targets(rows: Sequence[dict]) -> List[Target]:
    sparse = [r for r in rows if r.get("suite") == "sparse"]
    speed, eff, flex_eff = [], [], []
    cases = sorted({(r["seq_len"], r["family"], r["pattern"]) for r in sparse if r["family"] != "dense"})
    for n, family, pattern in cases:
        m = dict(seq_len=n, pattern=pattern)
        label = f"{pattern} N={_tokens(n)}"
        for p in ("fwd", "fwd+bwd"):
            ours, flex = _one(sparse, impl="ours", **m, **{"pass": p}), _one(sparse, impl="flex", **m, **{"pass": p})
            if ours and flex:
                speed.append((flex["ms"] / ours["ms"], f"{label} {p}"))
        ours = _one(sparse, impl="ours", **m, **{"pass": "fwd"})
        dense_ours = _one(sparse, impl="ours", family="dense", seq_len=n, **{"pass": "fwd"})
        if ours and dense_ours and ours["density"] >= 0.05:
            eff.append((ours["tflops_blocks"] / dense_ours["tflops_blocks"], f"{label} ({ours['density']:.1%})"))
        flex = _one(sparse, impl="flex", **m, **{"pass": "fwd"})
        dense_flex = _one(sparse, impl="flex", family="dense", seq_len=n, **{"pass": "fwd"})
        if flex and dense_flex and flex["density"] >= 0.05:
            flex_eff.append(flex["tflops_blocks"] / dense_flex["tflops_blocks"])
    t_speed = Target("Block-sparse: time vs FlexAttention, same block mask", "Flex ms / ours ms >= 1.0x")
    t_speed.status, t_speed.measured = _ratio_status(speed, 1.0)
    t_speed.details = [f"{label}: {v:.2f}x" for v, label in speed]
    t_eff = Target("Block-sparse: TFLOP/s on computed blocks vs our dense, density >= 5%", ">= 0.9x (Flex: 0.62-0.86)")
    t_eff.status, t_eff.measured = _ratio_status(eff, 0.9)
    if flex_eff:
        t_eff.measured += f"; Flex here {min(flex_eff):.2f}-{max(flex_eff):.2f}"
    t_eff.details = [f"{label}: {v:.2f}x" for v, label in eff]
    return [t_speed, t_eff]


def runs_targets(rows: Sequence[dict]) -> List[Target]:
    scaling = [r for r in rows if r.get("suite") == "scaling"]
    out = []
    t = Target("Dense causal N=64K, d=128, H=16: forward+backward runs", "status ok")
    hit = [r for r in scaling if r["family"] == "dense-causal" and r["seq_len"] == 65536
           and r["impl"] == "ours" and r["pass"] == "fwd+bwd"]
    if hit:
        r = hit[0]
        t.status = MET if r["status"] == "ok" else NOT_MET
        t.measured = (f"{r['ms']:.1f} ms, {r['peak_mem_gib']:.2f} GiB peak" if r["status"] == "ok"
                      else f"{r['status']}: {r.get('note') or ''}")
    out.append(t)
    t = Target("Sparse (bigbird or local) 256K and 1M tokens: forward+backward runs", "status ok at both N")
    parts, oks = [], []
    for n in (262144, 1048576):
        hits = [r for r in scaling if r["seq_len"] == n and r["impl"] == "ours" and r["pass"] == "fwd+bwd"
                and r["family"] != "dense-causal"]
        good = [r for r in hits if r["status"] == "ok"]
        if hits:
            oks.append(bool(good))
            parts.append(f"{_tokens(n)}: " + ", ".join(
                f"{r['family']} {r['ms']:.1f} ms {r['peak_mem_gib']:.1f} GiB" if r["status"] == "ok"
                else f"{r['family']} {r['status']}" for r in hits))
    if len(oks) == 2:
        t.status = MET if all(oks) else NOT_MET
    elif oks:
        t.status = NOT_MET if not all(oks) else NO_DATA
    t.measured = "; ".join(parts) or "-"
    out.append(t)
    return out


def memory_target(rows: Sequence[dict]) -> Target:
    """Peak memory linear in N: the log-log slope of ours' peak against N, per scaling sweep."""
    scaling = [r for r in rows if r.get("suite") == "scaling" and r["impl"] == "ours"]
    t = Target("Memory linear in N (ours, scaling suite)", "log-log slope of peak memory vs N <= 1.1")
    slopes = []
    for family in sorted({r["family"] for r in scaling}):
        for p in ("fwd", "fwd+bwd"):
            pts = [(r["seq_len"], r["peak_mem_gib"]) for r in ok_rows(scaling, family=family, **{"pass": p})
                   if _finite(r.get("peak_mem_gib")) and r["peak_mem_gib"] > 0]
            if len(pts) >= 2:
                xs = [math.log(n) for n, _ in pts]
                ys = [math.log(m) for _, m in pts]
                mx, my = statistics.fmean(xs), statistics.fmean(ys)
                slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
                slopes.append((slope, f"{family} {p}"))
                t.details.append(f"{family} {p}: slope {slope:.2f}; " + ", ".join(
                    f"{_tokens(n)} {m:.2f} GiB" for n, m in sorted(pts)))
    if slopes:
        worst = max(slopes)
        t.status = MET if worst[0] <= 1.1 else NOT_MET
        t.measured = f"worst slope {worst[0]:.2f} ({worst[1]})"
    return t


def eager_target(rows: Sequence[dict]) -> Target:
    t = Target("Speedup over eager standard attention", "report; the seed claims up to 3x")
    speedups = []
    for r in ok_rows(rows, impl="eager"):
        match = {k: r[k] for k in ("suite", "pattern", "seq_len", "head_dim", "batch", "heads", "causal", "pass")}
        ours = _one(rows, impl="ours", **match)
        if ours:
            speedups.append((r["ms"] / ours["ms"], f"{r['suite']} {r['case']} {r['pass']}"))
    if speedups:
        best = max(speedups)
        t.status = MET if best[0] >= 3.0 else NOT_MET
        t.measured = (f"up to {best[0]:.1f}x ({best[1]}), median {statistics.median(v for v, _ in speedups):.1f}x, "
                      f"{len(speedups)} cases")
        t.details = [f"{label}: {v:.1f}x" for v, label in sorted(speedups, key=lambda s: s[1])]
    return t


def estimator_errors(rows: Sequence[dict]) -> List[float]:
    return [abs(r["predicted_ms"] - r["ms"]) / r["ms"] for r in ok_rows(rows, impl="ours")
            if r.get("suite") != "compile" and _finite(r.get("predicted_ms"))]


def estimator_target(rows: Sequence[dict], calibration: Optional[dict]) -> Target:
    t = Target("Estimator: median |predicted - measured| / measured (ours)", "<= 25% after calibration")
    errs = estimator_errors(rows)
    if errs:
        before = statistics.median(errs)
        t.measured = f"profile as run: {before:.0%} over {len(errs)} measurements"
        t.status = MET if before <= 0.25 else NOT_MET
    if calibration and _finite(calibration.get("after", {}).get("median_rel_error")):
        after = calibration["after"]["median_rel_error"]
        t.measured += f"; calibrated: {after:.0%} ({', '.join(f'{k}={v:.3g}' for k, v in calibration['fitted'].items())})"
        t.status = MET if after <= 0.25 else NOT_MET
    return t


def guard_target(rows: Sequence[dict]) -> Target:
    t = Target("Correctness guard: ours against a peer on every timed case", "relative error within tolerance")
    checked = {}
    for r in rows:
        if r.get("impl") == "ours" and r.get("err_ok") is not None:
            checked[(r["suite"], r["case"])] = r
    if checked:
        bad = [r for r in checked.values() if not r["err_ok"]]
        t.status = MET if not bad else NOT_MET
        worst = max(checked.values(), key=lambda r: r["err_out_rel"] if _finite(r["err_out_rel"]) else math.inf)
        t.measured = (f"{len(checked) - len(bad)}/{len(checked)} cases pass; worst output error "
                      f"{worst['err_out_rel']:.1e} vs {worst['err_ref']} ({worst['case']})")
        t.details = [f"FAILED {r['case']}: out {r['err_out_rel']:.1e}, grad {r['err_grad_rel']} vs {r['err_ref']}"
                     for r in bad]
    return t


def evaluate(rows: Sequence[dict], calibration: Optional[dict] = None) -> List[Target]:
    return (dense_targets(rows) + sparse_targets(rows) + runs_targets(rows)
            + [memory_target(rows), eager_target(rows), estimator_target(rows, calibration), guard_target(rows)])


def targets_text(rows: Sequence[dict], meta: dict, calibration: Optional[dict] = None) -> str:
    """The targets as a terminal table (the last thing ``benchmarks.run`` prints)."""
    lines = [f"issue-4 targets ({meta.get('gpu') or 'CPU'}, {meta.get('mode')} run; "
             "a quick or tiny run covers only part of the cases)"]
    for t in evaluate(rows, calibration):
        lines.append(f"  {t.status:<8} {t.what}: {t.measured}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tables
def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    def cell(c) -> str:
        return str(c).replace("|", "\\|")   # a pipe, even in a code span, would split the cell

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in body]
    return "\n".join(lines)


def _f(x, fmt="{:.1f}") -> str:
    return fmt.format(x) if _finite(x) else "–"


def _cell(rows, fmt, key, **match) -> str:
    hits = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if not hits:
        return "–"
    r = hits[0]
    if r["status"] != "ok":
        return r["status"]
    return _f(r[key], fmt)


def dense_table(rows) -> str:
    dense = [r for r in rows if r.get("suite") == "dense"]
    impls = [i for i in IMPL_ORDER if any(r["impl"] == i for r in dense)]
    body = []
    for d, causal, n in sorted({(r["head_dim"], r["causal"], r["seq_len"]) for r in dense},
                               key=lambda g: (-g[0], g[1], g[2])):
        cells = [str(d), "yes" if causal else "no", _tokens(n)]
        for impl in impls:
            m = dict(impl=impl, head_dim=d, causal=causal, seq_len=n)
            cells.append(f"{_cell(dense, '{:.0f}', 'tflops', **m, **{'pass': 'fwd'})} / "
                         f"{_cell(dense, '{:.0f}', 'tflops', **m, **{'pass': 'fwd+bwd'})}")
        body.append(cells)
    return _md_table(["d", "causal", "N"] + [IMPL_LABELS.get(i, i) for i in impls], body)


def sparse_table(rows) -> str:
    sparse = [r for r in rows if r.get("suite") == "sparse"]
    body = []
    for n, family, pattern in sorted({(r["seq_len"], r["family"] != "dense", r["pattern"]) for r in sparse}):
        m = dict(seq_len=n, pattern=pattern)
        any_row = next(r for r in sparse if r["seq_len"] == n and r["pattern"] == pattern)
        dense_ours = _one(sparse, impl="ours", family="dense", seq_len=n, **{"pass": "fwd"})
        ours = _one(sparse, impl="ours", **m, **{"pass": "fwd"})
        eff = _f(ours["tflops_blocks"] / dense_ours["tflops_blocks"], "{:.2f}") if ours and dense_ours else "–"
        cells = [_tokens(n), f"`{pattern}`", _f(any_row.get("density"), "{:.1%}")]
        for p in ("fwd", "fwd+bwd"):
            o, fl = _one(sparse, impl="ours", **m, **{"pass": p}), _one(sparse, impl="flex", **m, **{"pass": p})
            cells += [_cell(sparse, "{:.3f}", "ms", impl="ours", **m, **{"pass": p}),
                      _cell(sparse, "{:.3f}", "ms", impl="flex", **m, **{"pass": p}),
                      _f(fl["ms"] / o["ms"], "{:.2f}x") if o and fl else "–"]
        cells += [_cell(sparse, "{:.0f}", "tflops_blocks", impl="ours", **m, **{"pass": "fwd"}), eff]
        body.append(cells)
    return _md_table(["N", "pattern", "density", "ours fwd ms", "Flex fwd ms", "Flex/ours",
                      "ours fwd+bwd ms", "Flex fwd+bwd ms", "Flex/ours", "ours fwd TFLOP/s",
                      "vs our dense"], body)


def scaling_table(rows) -> str:
    scaling = [r for r in rows if r.get("suite") == "scaling"]
    impls = [i for i in IMPL_ORDER if any(r["impl"] == i for r in scaling)]
    body = []
    for family, n in sorted({(r["family"], r["seq_len"]) for r in scaling}, key=lambda g: (g[0] != "dense-causal", g)):
        cells = [family, _tokens(n)]
        for impl in impls:
            m = dict(impl=impl, family=family, seq_len=n)
            parts = []
            for p in ("fwd", "fwd+bwd"):
                hits = [r for r in scaling if all(r.get(k) == v for k, v in m.items()) and r["pass"] == p]
                if not hits:
                    parts.append("–")
                elif hits[0]["status"] != "ok":
                    parts.append(hits[0]["status"])
                else:
                    parts.append(f"{hits[0]['ms']:.2f} ms ({_f(hits[0]['peak_mem_gib'], '{:.2f}')} GiB)")
            cells.append(" / ".join(parts))
        body.append(cells)
    return _md_table(["pattern", "N"] + [f"{IMPL_LABELS.get(i, i)} fwd / fwd+bwd" for i in impls], body)


def scaling_shape(rows) -> str:
    r = next((r for r in rows if r.get("suite") == "scaling"), None)
    return f"B = {r['batch']}, H = {r['heads']}, d = {r['head_dim']}." if r else ""


def compile_table(rows) -> str:
    comp = [r for r in rows if r.get("suite") == "compile"]
    body = [[r["impl"], _tokens(r["seq_len"]) if r["seq_len"] else "–",
             _f(r.get("ms"), "{:.2f}") if r["status"] == "ok" else r["status"],
             _f(r.get("first_call_ms"), "{:.0f}"), _f(r.get("peak_mem_gib"), "{:.2f}"), r.get("note") or ""]
            for r in comp]
    return _md_table(["what", "N", "ms (median)", "first call ms", "peak GiB", "note"], body)


def estimator_table(rows, calibration) -> str:
    body = []
    fitted = {}
    if calibration:
        fitted = {(r["case"], r["pass"]): r.get("after_ms") for r in calibration.get("rows", [])}
    for r in ok_rows(rows, impl="ours"):
        if r.get("suite") == "compile" or not _finite(r.get("predicted_ms")):
            continue
        after = fitted.get((r["case"], r["pass"]))
        body.append([r["suite"], r["case"], r["pass"], _f(r["ms"], "{:.3f}"), _f(r["predicted_ms"], "{:.3f}"),
                     _f(abs(r["predicted_ms"] - r["ms"]) / r["ms"], "{:.0%}"),
                     _f(after, "{:.3f}"), _f(abs(after - r["ms"]) / r["ms"], "{:.0%}") if _finite(after) else "–"])
    return _md_table(["suite", "case", "pass", "measured ms", "predicted ms", "error",
                      "calibrated ms", "error"], body)


def estimator_summary(rows, calibration) -> str:
    """Median relative error per suite and pass, before (and after) calibration."""
    after = {}
    if calibration:
        after = {(r["case"], r["pass"]): r.get("after_ms") for r in calibration.get("rows", [])}
    parts = []
    for suite in ("dense", "sparse", "scaling"):
        for p in ("fwd", "fwd+bwd"):
            mine = [r for r in ok_rows(rows, impl="ours", suite=suite, **{"pass": p}) if _finite(r.get("predicted_ms"))]
            if not mine:
                continue
            text = f"{suite} {p}: {statistics.median(abs(r['predicted_ms'] - r['ms']) / r['ms'] for r in mine):.0%}"
            fitted = [abs(after[(r["case"], p)] - r["ms"]) / r["ms"] for r in mine if _finite(after.get((r["case"], p)))]
            if fitted:
                text += f" → {statistics.median(fitted):.0%}"
            parts.append(text)
    return ("Median |predicted − measured| / measured" + (" (as run → calibrated)" if after else "")
            + ": " + "; ".join(parts) + ".") if parts else ""


def problems_list(rows) -> str:
    expected_oom = lambda r: r["impl"] == "eager" and r["status"] == "oom"  # noqa: E731 - the point of eager
    bad = [r for r in rows if r.get("status") in ("error", "oom") and not expected_oom(r)]
    bad += [r for r in rows if r.get("impl") == "ours" and r.get("err_ok") is False]
    skipped = [r for r in rows if r.get("status") == "skipped"]
    lines = [f"- {r['status']}: {r['impl']} {r['pass']} on {r['case']}: {r.get('note') or ''}" for r in bad]
    reasons = {}
    for r in skipped:
        reasons.setdefault(r.get("note") or "", []).append(r)
    lines += [f"- skipped ({len(v)} measurements): {k}" for k, v in sorted(reasons.items())]
    return "\n".join(lines) or "None."


# ----------------------------------------------------------------------------- document
def render(results_dir: Path, doc_path: Path) -> str:
    """The generated part of the document, for the results in ``results_dir``."""
    meta, rows = load(results_dir)
    calibration = None
    cal_path = Path(results_dir) / "calibration.json"
    if cal_path.exists():
        calibration = json.loads(cal_path.read_text())
    targets = evaluate(rows, calibration)
    rel = Path(os.path.relpath(Path(results_dir).resolve(), doc_path.resolve().parent))
    parts = [
        "## Run",
        "",
        _md_table(["", ""], [
            ["command", f"`{meta.get('command')}`"], ["GPU", meta.get("gpu") or "CPU"],
            ["torch / triton / CUDA / cuDNN",
             f"{meta.get('torch')} / {meta.get('triton')} / {meta.get('cuda')} / {meta.get('cudnn')}"],
            ["date (UTC)", f"{meta.get('date_utc')} to {meta.get('date_utc_end')}"],
            ["mode, dtype", f"{meta.get('mode')}, {meta.get('dtype')}"],
            ["git commit", f"`{meta.get('git_commit')}`"], ["wall time", f"{meta.get('elapsed_s')} s"],
            ["results", f"`{rel.as_posix()}/results.json`, `results.csv`"],
        ]),
        "",
        "## Targets (issue 4)",
        "",
        "Computed from the results by `benchmarks/report.py`; a target with no data says NO DATA.",
        "",
        _md_table(["target", "requirement", "status", "measured"],
                  [[t.what, t.requirement, f"**{t.status}**", t.measured] for t in targets]),
        "",
        "<details><summary>Per-case ratios behind each target</summary>",
        "",
    ]
    for t in targets:
        if t.details:
            parts += [f"**{t.what}**", ""] + [f"- {d}" for d in t.details] + [""]
    parts += ["</details>", ""]
    plots = [name for name in PLOTS if (Path(results_dir) / f"{name}.png").exists()]
    sections = (
        ("Dense attention: TFLOP/s, forward / forward+backward", "dense",
         "FLOPs 4·B·H·N²·d, halved for causal; forward+backward 3.5x. B·N = 16K, H·d = 2048.", dense_table(rows)),
        ("Block-sparse attention: ours and FlexAttention on the same block mask", "sparse",
         "FLOPs counted on computed blocks (4·d·block²·nnz·B). *vs our dense* is our TFLOP/s here over our "
         "dense TFLOP/s at the same N.", sparse_table(rows)),
        ("Scaling: runtime and peak memory against N", "scaling",
         f"{scaling_shape(rows)} Peak memory is `torch.cuda.max_memory_allocated` over one call, inputs "
         "(q, k, v, dO) included.", scaling_table(rows)),
        ("Building the mask", "compile", "", compile_table(rows)),
        ("Estimator against measurements", None,
         "`sparseflash.estimate(...).predicted_ms` beside each measured time of ours; calibrated columns from "
         "`python -m benchmarks.calibrate`. " + estimator_summary(rows, calibration),
         "<details><summary>Every measurement of ours</summary>\n\n" + estimator_table(rows, calibration)
         + "\n\n</details>"),
    )
    for title, plot, text, table in sections:
        parts += [f"## {title}", ""]
        if text:
            parts += [text, ""]
        if plot in plots:
            parts += [f"![{plot}]({rel.as_posix()}/{plot}.png)", ""]
        parts += [table, ""]
    parts += ["## Failures, out-of-memory and skipped measurements", "", problems_list(rows), ""]
    return "\n".join(parts)


DOC_TEMPLATE = """# Benchmarks

sparseflash against SDPA (FlashAttention-2 and cuDNN), FlexAttention and eager attention,
measured in one run on one GPU. How to run: `benchmarks/README.md`. Targets: issue 4.

{begin}
{end}

## Where we fall short, and what was tried

(Written by hand after each committed run; `python -m benchmarks.report` leaves this alone.)
"""


def update_doc(results_dir: Path, doc_path: Path) -> None:
    generated = render(results_dir, doc_path)
    text = doc_path.read_text() if doc_path.exists() else DOC_TEMPLATE.format(begin=BEGIN, end=END)
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc_path} lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text(f"{head}{BEGIN}\n{generated}\n{END}{tail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    p.add_argument("results_dir", type=Path)
    p.add_argument("--doc", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md")
    p.add_argument("--print", action="store_true", help="print the targets; do not write the document")
    args = p.parse_args(argv)
    meta, rows = load(args.results_dir)
    cal_path = args.results_dir / "calibration.json"
    calibration = json.loads(cal_path.read_text()) if cal_path.exists() else None
    print(targets_text(rows, meta, calibration))
    if not args.print:
        update_doc(args.results_dir, args.doc)
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
