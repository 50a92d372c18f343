"""The committed FA4 summaries (issue 10's ``benchmarks/results/<gpu>/fa4_ratio.json``) agree with
the benchmark rows they name: each head ratio is FA4's time ÷ ours from those rows, and the
minima are the minima of the cases."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUMMARIES = sorted((ROOT / "benchmarks" / "results").glob("*/fa4_ratio.json"))


def test_the_h100_summary_names_its_rows():
    # the latest summary (stop 72 on) names the hopper.json files its head ratios come from
    assert ROOT / "benchmarks/results/h100/fa4_ratio.json" in SUMMARIES
    summary = json.loads((ROOT / "benchmarks/results/h100/fa4_ratio.json").read_text())
    assert summary.get("rows_from"), "h100/fa4_ratio.json names no rows_from"


@pytest.mark.parametrize("path", SUMMARIES, ids=lambda p: p.parent.name)
def test_fa4_summary_matches_its_rows(path):
    summary = json.loads(path.read_text())
    assert set(summary) >= {"gpu", "min_fwd_ratio", "min_fwd_bwd_ratio", "cases"}
    cases = summary["cases"]
    assert cases and len({c["case"] for c in cases}) == len(cases)
    for key, low in (("fwd_ratio", "min_fwd_ratio"), ("fwd_bwd_ratio", "min_fwd_bwd_ratio")):
        assert summary[low] == min(c[key] for c in cases), key
        for c in cases:
            assert c[key] > 0
            if f"{key}_runs" in c:
                # the head is one of the recorded runs (the latest on the H100, the lowest of
                # three on the H200: each summary's "source" says which)
                assert c[key] in c[f"{key}_runs"], c["case"]
    if "rows_from" not in summary:
        pytest.skip(f"{path.parent.name}/fa4_ratio.json predates rows_from (stop 72): its rows are not named")
    ms = {}
    for rel in summary["rows_from"]:
        data = json.loads((ROOT / rel).read_text())
        assert data["meta"]["gpu"] == summary["gpu"], rel
        for r in data["rows"]:
            ms[(r["case"], r["impl"], r["pass"])] = r["ms"]
    for c in cases:
        for p, key in (("fwd", "fwd_ratio"), ("fwd+bwd", "fwd_bwd_ratio")):
            fa4, ours = ms[(c["case"], "fa4", p)], ms[(c["case"], "ours", p)]
            assert round(fa4 / ours, 3) == c[key], (c["case"], p, fa4, ours)
