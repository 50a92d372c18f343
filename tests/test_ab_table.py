"""benchmarks/ab_table.py: the A/B lines device-call scripts print."""
from benchmarks.ab_table import table


def test_ab_table_ratios_and_missing_rows():
    rows = [dict(case="c", impl="ours", **{"pass": "fwd"}, ms=2.0, tflops=100.0),
            dict(case="c", impl="x", **{"pass": "fwd"}, ms=1.0, tflops=200.0),
            dict(case="c", impl="ours", **{"pass": "fwd+bwd"}, ms=6.0, tflops=90.0),
            dict(case="c", impl="x", **{"pass": "fwd+bwd"}, ms=float("nan"), tflops=None),
            dict(case="d", impl="x", **{"pass": "fwd"}, ms=1.0, tflops=1.0)]
    lines = table(rows)
    assert len(lines) == 2                                  # case d has no "ours" row
    assert "| x 1.000 (2.000x)" in lines[0]
    assert "| x" not in lines[1]                            # a NaN time is left out
    assert table(rows, impls=["y"])[0].endswith("(100)")
