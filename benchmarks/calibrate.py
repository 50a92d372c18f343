"""Fit the estimator's device profile to measured times of our kernel.

    python -m benchmarks.calibrate RESULTS[@D] [RESULTS ...] [--device h100] [--fields ...]
        [--exclude 'CASE_PREFIX|PASS' ...] [--no-write]

Reads ``results.json`` from ``python -m benchmarks.run`` (or ``hopper.json`` files from
``benchmarks/hopper.py``, whose cases it maps to layouts: dense at B*N = 16K, sparse at B = 1,
H = 2048 / d, bf16, blocks of 128), rebuilds the layout of every timed case of ours (pattern
text, lengths, block, causal, heads are in each row), and fits the profile's calibration
factors so that ``sparseflash.estimate(...).predicted_ms`` matches the measured medians:

* ``attn_fwd_efficiency`` -- achieved fraction of peak matmul throughput, forward kernel;
* ``attn_bwd_efficiency`` -- the same for the backward kernels;
* ``attn_bwd_efficiency_d64`` -- the backward's at head dims up to 64 (None: the one above);
* ``attn_exp_per_ns``     -- exponentials a nanosecond, the softmax's limit at small head dims;
* ``attn_tile_overhead_us`` -- fixed time of a query or key tile (start and finish), per SM;
* ``launch_overhead_us``  -- the fixed cost per kernel launch.

``--fields`` picks which (default: all six); the others keep the profile's values.

The fit minimises the squared log error, sum(log(predicted / measured)^2), with bounds, so a
2x over-prediction weighs the same as a 2x under-prediction. It prints the fitted values, the
median |predicted - measured| / measured before and after (issue 4 asks for <= 25%), and the
worst rows, and writes ``calibration.json`` beside the results (``benchmarks.report`` reads it).
Paste the printed ``replace(...)`` into the profile in ``sparseflash/estimate.py`` to adopt it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

# Fitted fields: (lower bound, upper bound, step scale, start where the profile has None).
PARAMETERS = {
    "attn_fwd_efficiency": (0.02, 1.0, 0.1, 0.5),
    "attn_bwd_efficiency": (0.02, 1.0, 0.1, 0.44),
    "attn_bwd_efficiency_d64": (0.02, 1.0, 0.1, 0.44),
    "attn_exp_per_ns": (100.0, 20000.0, 1000.0, 2000.0),
    "attn_tile_overhead_us": (0.0, 50.0, 1.0, 0.0),
    "launch_overhead_us": (0.0, 200.0, 10.0, 4.0),
}
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def load_rows(path: Path) -> Tuple[dict, List[dict]]:
    path = Path(path)
    if path.is_dir():
        path = path / ("hopper.json" if (path / "hopper.json").exists() else "results.json")
    data = json.loads(path.read_text())
    if data["meta"].get("suites") == "hopper":
        return data["meta"], hopper_rows(data["rows"])
    return data["meta"], data["rows"]


_HOPPER_CASE = re.compile(r"^(?P<pattern>\S+?)(?P<causal> causal)? N=(?P<n>\d+) d=(?P<d>\d+)")


def hopper_rows(rows: Sequence[dict]) -> List[dict]:
    """``benchmarks/hopper.py`` rows of ours as calibration rows: the case name gives the
    pattern, causal flag, N and d; dense cases ran at B*N = 16K and the sparse ones at B = 1,
    both with H = 2048 / d, bf16, blocks of 128 (the script's shapes)."""
    out = []
    for r in rows:
        m = _HOPPER_CASE.match(r.get("case", ""))
        if r.get("impl") != "ours" or m is None or r.get("pass") not in ("fwd", "fwd+bwd"):
            continue
        pattern, n, d = m["pattern"], int(m["n"]), int(m["d"])
        dense = pattern == "dense"
        out.append(dict(r, suite="dense" if dense else "sparse", status="ok",
                        pattern=pattern if "(" in pattern else pattern + "()", seq_len=n,
                        block_size=128, causal=bool(m["causal"]), heads=2048 // d, head_dim=d,
                        batch=max(1, 16384 // n) if dense else 1, dtype="bf16"))
    return out


def timed_rows(rows: Sequence[dict]) -> List[dict]:
    """Rows of ours with a finite measured time, from the attention suites."""
    return [r for r in rows if r.get("impl") == "ours" and r.get("status") == "ok"
            and r.get("suite") in ("dense", "sparse", "scaling")
            and isinstance(r.get("ms"), (int, float)) and math.isfinite(r["ms"]) and r["ms"] > 0]


class Model:
    """``estimate()`` over every row's layout, for a profile with some fields replaced."""

    def __init__(self, rows: Sequence[dict], device: str, fields: Sequence[str] = tuple(PARAMETERS)):
        import torch

        import sparseflash as sf
        from sparseflash.estimate import estimate, get_device
        from benchmarks.run import pattern_from_text

        self.estimate, self.base = estimate, get_device(device)
        self.rows = list(rows)
        unknown = set(fields) - set(PARAMETERS)
        if unknown:
            raise ValueError(f"fields must be among {sorted(PARAMETERS)}, got {sorted(unknown)}")
        self.names = [n for n in PARAMETERS if n in fields and n in {f.name for f in dataclasses.fields(self.base)}]
        layouts: Dict[tuple, object] = {}
        self.layouts = []
        for r in self.rows:
            key = (r["pattern"], r["seq_len"], r["block_size"], r["causal"], r["heads"])
            if key not in layouts:
                layouts[key] = sf.compile(pattern_from_text(r["pattern"]), r["seq_len"], block_size=r["block_size"],
                                          causal=bool(r["causal"]), num_heads=r["heads"])
            self.layouts.append(layouts[key])
        self.dtypes = [getattr(torch, DTYPE_NAMES.get(r.get("dtype"), "bfloat16")) for r in self.rows]
        self.measured = np.array([r["ms"] for r in self.rows], dtype=float)

    def initial(self) -> np.ndarray:
        values = [getattr(self.base, n) for n in self.names]
        # an unset small-head-dim backward efficiency starts from the backward's one
        values = [self.base.attn_bwd_efficiency if n == "attn_bwd_efficiency_d64" and v is None else v
                  for n, v in zip(self.names, values)]
        return np.array([PARAMETERS[n][3] if v is None else v for n, v in zip(self.names, values)],
                        dtype=float)

    def predict(self, x: Sequence[float]) -> np.ndarray:
        profile = self.base.replace(**dict(zip(self.names, map(float, x))))
        return np.array([
            self.estimate(layout, r["head_dim"], batch=r["batch"], dtype=dtype, device=profile,
                          backward=r["pass"] == "fwd+bwd").predicted_ms
            for r, layout, dtype in zip(self.rows, self.layouts, self.dtypes)])

    def residuals(self, x) -> np.ndarray:
        return np.log(self.predict(x) / self.measured)


def median_rel_error(pred: np.ndarray, measured: np.ndarray) -> float:
    return float(np.median(np.abs(pred - measured) / measured))


def fit(model: Model) -> np.ndarray:
    """Least squares on log error; without scipy, scale the efficiencies by median ratios."""
    x0 = model.initial()
    lo = np.array([PARAMETERS[n][0] for n in model.names])
    hi = np.array([PARAMETERS[n][1] for n in model.names])
    x0 = np.clip(x0, lo, hi)
    try:
        from scipy.optimize import least_squares
    except ImportError:
        return _fit_median_ratio(model, x0, lo, hi)
    scale = np.array([PARAMETERS[n][2] for n in model.names])
    result = least_squares(model.residuals, x0, bounds=(lo, hi), x_scale=scale, diff_step=1e-3)
    return result.x


def _fit_median_ratio(model: Model, x: np.ndarray, lo, hi) -> np.ndarray:
    x = x.copy()
    for _ in range(5):
        for pass_name, field in (("fwd", "attn_fwd_efficiency"), ("fwd+bwd", "attn_bwd_efficiency")):
            if field not in model.names:
                continue
            idx = [i for i, r in enumerate(model.rows) if r["pass"] == pass_name]
            if idx:
                ratio = np.median(model.predict(x)[idx] / model.measured[idx])
                j = model.names.index(field)
                x[j] = np.clip(x[j] * ratio, lo[j], hi[j])
    return x


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+",
                   help="results directories or files (results.json, or hopper.json of benchmarks/hopper.py); "
                        "PATH@D keeps that file's rows of head dim D only")
    p.add_argument("--exclude", action="append", default=[], metavar="CASE_PREFIX|PASS",
                   help="leave out the rows whose case starts with CASE_PREFIX and whose pass is PASS "
                        "(fwd or fwd+bwd), e.g. a row timed in a slow mode; repeatable")
    p.add_argument("--fields", default=",".join(PARAMETERS),
                   help=f"comma-separated fields to fit (default: {','.join(PARAMETERS)})")
    p.add_argument("--device", default=None, help="profile to fit (default: the run's --estimate-device)")
    p.add_argument("--no-write", action="store_true", help="do not write calibration.json")
    p.add_argument("--worst", type=int, default=10, help="rows of the largest errors to print")
    args = p.parse_args(argv)
    rows = []
    paths = []
    for item in args.results:
        path, sep, dim = item.rpartition("@") if "@" in item else (item, "", "")
        if sep and not dim.isdigit():
            p.error(f"results: PATH@D wants a head dim D, got {item!r}")
        paths.append(Path(path))
        meta, more = load_rows(Path(path))
        rows += [r for r in more if not sep or r.get("head_dim") == int(dim)]
    excluded = []
    for item in args.exclude:
        case, sep, pass_name = item.rpartition("|")
        if not sep or pass_name not in ("fwd", "fwd+bwd"):
            p.error(f"--exclude wants CASE_PREFIX|fwd or CASE_PREFIX|fwd+bwd, got {item!r}")
        excluded.append((case, pass_name))
    rows = [r for r in rows if not any(str(r.get("case", "")).startswith(c) and r.get("pass") == q
                                       for c, q in excluded)]
    device = args.device or meta.get("estimate_device") or "h100"
    rows = timed_rows(rows)
    if not rows:
        print("no timed rows of ours in the results: nothing to fit")
        return 1
    model = Model(rows, device, [f for f in args.fields.split(",") if f])
    before = model.predict(model.initial())
    x = fit(model)
    after = model.predict(x)
    fitted = dict(zip(model.names, map(float, x)))
    err_before, err_after = median_rel_error(before, model.measured), median_rel_error(after, model.measured)

    print(f"calibrating profile {device!r} ({model.base.name}) on {len(rows)} measurements of ours "
          f"from {meta.get('gpu') or 'CPU'} ({meta.get('date_utc')})")
    print(f"  {'field':<22}{'before':>10}{'fitted':>10}")
    for n in model.names:
        before_value = getattr(model.base, n)
        print(f"  {n:<22}{'None' if before_value is None else format(before_value, '.4g'):>10}{fitted[n]:>10.4g}")
    print(f"  median |predicted - measured| / measured: before {err_before:.1%}, after {err_after:.1%} "
          f"(target <= 25%)")
    for pass_name in ("fwd", "fwd+bwd"):
        idx = [i for i, r in enumerate(rows) if r["pass"] == pass_name]
        if idx:
            print(f"    {pass_name:<8} before {median_rel_error(before[idx], model.measured[idx]):.1%}, "
                  f"after {median_rel_error(after[idx], model.measured[idx]):.1%} ({len(idx)} rows)")
    order = np.argsort(-np.abs(after - model.measured) / model.measured)[: args.worst]
    print("  largest errors after the fit:")
    for i in order:
        r = rows[i]
        print(f"    {r['suite']:<8}{r['pass']:<8} measured {r['ms']:9.3f} ms  predicted {after[i]:9.3f} "
              f"({(after[i] - r['ms']) / r['ms']:+.0%})  {r['case']}")
    print("  to adopt: DEVICES[%r] = DEVICES[%r].replace(%s)" % (
        device, device, ", ".join(f"{k}={v:.3g}" for k, v in fitted.items())))

    if not args.no_write:
        first = paths[0]
        out = (first if first.is_dir() else first.parent) / "calibration.json"
        out.write_text(json.dumps({
            "device": device, "source": meta.get("gpu"), "date_utc": meta.get("date_utc"),
            "command": "python -m benchmarks.calibrate " + " ".join(map(str, argv if argv is not None else sys.argv[1:])),
            "fitted": fitted, "initial": {n: getattr(model.base, n) for n in model.names},
            "before": {"median_rel_error": err_before}, "after": {"median_rel_error": err_after},
            "rows": [{"case": r["case"], "suite": r["suite"], "pass": r["pass"], "measured_ms": r["ms"],
                      "before_ms": float(b), "after_ms": float(a)} for r, b, a in zip(rows, before, after)],
        }, indent=1))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
