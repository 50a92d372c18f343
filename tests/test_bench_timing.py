"""benchmarks/timing.py (interleaved timing after a heat phase) and its use by
benchmarks/hopper.py's ``run_case``: the FA4 ratios of issue 10 come from there."""
import contextlib
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import hopper, real_batches as rb, timing  # noqa: E402


def drifting_timer(log):
    """A timer whose readings grow by 1 ms a call (a GPU slowing as it warms); it runs the call
    and logs its reading."""
    clock = [0.0]

    def timer(fn):
        fn()
        clock[0] += 1.0
        log.append(clock[0])
        return clock[0], 1
    return timer


def test_interleaved_reverses_every_other_round_and_heats_with_the_last_call():
    order, log = [], []

    def job(name):
        return (name, (lambda: order.append((name, "fwd")), lambda: order.append((name, "step"))),
                contextlib.nullcontext)
    jobs = [job("a"), job("b"), job("c")]
    res = timing.interleaved(drifting_timer(log), "cpu", jobs, rounds=3, heat_s=0.05,
                             peak=lambda fn, dev: (fn(), 7.0)[1])
    heat = [x for x in order[:order.index(("a", "fwd"))]]
    assert heat and set(heat) == {("a", "step"), ("b", "step"), ("c", "step")}, heat
    # rounds: a b c, c b a, a b c; two calls each (readings 1..18)
    assert res["a"][0] == [[1, 11, 13], [2, 12, 14]]
    assert res["c"][0] == [[5, 7, 17], [6, 8, 18]]
    assert res["b"][1] == [7.0, 7.0]
    # a drift linear in time: the middle job's mean equals the outer ones' over rounds 1-2
    assert timing.mean(res["b"][0][0][:2]) == timing.mean(res["a"][0][0][:2]) == 6.0
    assert timing.rounds_note([1.0, 2.5]) == "mean of 2 interleaved rounds: 1.0000, 2.5000"


def test_interleaved_refuses_bad_arguments():
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        timing.interleaved(lambda fn: (0.0, 1), "cpu", [], rounds=0)
    same = ("x", (lambda: None,), contextlib.nullcontext)
    with pytest.raises(ValueError, match="distinct names"):
        timing.interleaved(lambda fn: (0.0, 1), "cpu", [same, same], rounds=1)


def test_hopper_run_case_checks_then_times_interleaved(monkeypatch):
    """``run_case``: an impl whose forward raises is dropped with an error row; one whose
    backward raises keeps its forward row; the others are compared with ``ours`` (forward and
    gradients) and timed in interleaved rounds with their settings held (``fn.switches``),
    backward included."""
    held, ran = [], []

    def impl(name, scale=1.0, fail=None):
        @contextlib.contextmanager
        def switches():
            held.append(name)
            try:
                yield
            finally:
                held.pop()

        def fn(q, k, v):
            if fail == "fwd":
                raise RuntimeError("no forward here")
            ran.append((name, tuple(held)))
            out = torch.softmax(q.float() @ k.float().transpose(-1, -2), -1) @ v.float() * scale
            if fail == "bwd":
                out = out.detach()          # autograd.grad then raises
            return out.to(q.dtype)
        fn.switches = switches
        return fn

    monkeypatch.setattr(rb, "ROWS", [])
    monkeypatch.setattr(hopper, "ROWS", rb.ROWS)
    monkeypatch.setattr(hopper, "peak", lambda fn, dev: (fn(), 1.5)[1])
    monkeypatch.setattr(hopper, "HEAT_S", 0.0)
    monkeypatch.setattr(hopper, "ROUNDS", 2)
    log = []
    impls = {"ours": impl("ours"), "twice": impl("twice", 2.0), "nofwd": impl("nofwd", fail="fwd"),
             "nobwd": impl("nobwd", fail="bwd")}
    hopper.run_case(drifting_timer(log), torch.device("cpu"), "case", impls, 1, 2, 8, 4, 1e6)
    rows = {(r["impl"], r["pass"]): r for r in rb.ROWS}
    assert "RuntimeError: no forward here" in rows[("nofwd", "error")]["note"]
    assert "nofwd" not in impls
    assert math.isnan(rows[("nobwd", "fwd+bwd")]["ms"]) and "RuntimeError" in rows[("nobwd", "fwd+bwd")]["note"]
    # twice the output and gradients of ours: relative difference 1 in each
    assert "max|diff|/max|ours| = 1.00e+00" in rows[("twice", "fwd")]["note"]
    assert rows[("twice", "fwd+bwd")]["note"].startswith("grads max|diff|/max|ours| = 1.00e+00, 1.00e+00, 1.00e+00")
    # readings: round 1 ours(1,2) twice(3,4) nobwd(5); round 2 reversed nobwd(6) twice(7,8) ours(9,10)
    assert rows[("ours", "fwd")]["ms"] == 5.0 and rows[("ours", "fwd+bwd")]["ms"] == 6.0
    assert rows[("twice", "fwd")]["ms"] == 5.0 and rows[("nobwd", "fwd")]["ms"] == 5.5
    assert "mean of 2 interleaved rounds: 1.0000, 9.0000" in rows[("ours", "fwd")]["note"]
    assert rows[("ours", "fwd")]["peak_gib"] == 1.5
    assert all(h and h[-1] == name for name, h in ran), "an impl ran outside its settings"
    assert [(r["impl"], r["pass"]) for r in rb.ROWS if r["pass"] != "error"] == [
        ("ours", "fwd"), ("twice", "fwd"), ("nobwd", "fwd"),
        ("ours", "fwd+bwd"), ("twice", "fwd+bwd"), ("nobwd", "fwd+bwd")]


def test_run_py_times_a_case_interleaved_and_records_a_failing_step():
    """benchmarks/run.py ``Runner.time_interleaved``: every step timed in ``--rounds`` rounds
    (``ms`` their mean, ``ms_rounds`` each, ``reps`` all timed calls), a step that raises
    recorded as an error row without stopping the others, and the budget respected."""
    import functools
    import types

    from benchmarks import run

    calls = []

    def step(name, fail=False):
        def fn():
            calls.append(name)
            if fail and len([c for c in calls if c == name]) > 1:   # the first call passed
                raise RuntimeError(f"{name} broke")
        return fn
    runner = types.SimpleNamespace(
        args=types.SimpleNamespace(heat=5.0, rounds=3, verbose=False), device=torch.device("cpu"),
        timer=run.Timer(torch.device("cpu"), warmup_ms=0.0, rep_ms=0.0, min_reps=2),
        eager_oom_at={}, cleanup=lambda: None, over_budget=lambda: False)
    runner._record_failure = functools.partial(run.Runner._record_failure, runner)
    case = types.SimpleNamespace(suite="dense", sweep=None, seq_len=64, is_dense=True)
    keys = [("ours", "fwd"), ("ours", "fwd+bwd"), ("flex", "fwd")]
    rows = {key: dict(status="ok", note="", flops_blocks=1e9, flops_anchor=2e9) for key in keys}
    steps = {keys[0]: step("a"), keys[1]: step("b"), keys[2]: step("c", fail=True)}
    run.Runner.time_interleaved(runner, case, rows, steps, input_bytes=0)
    for key in keys[:2]:
        row = rows[key]
        assert row["status"] == "ok" and len(row["ms_rounds"]) == 3, row
        assert row["ms"] == pytest.approx(sum(row["ms_rounds"]) / 3, rel=1e-3, abs=1e-4)
        assert row["reps"] >= 3 * 2 and row["tflops"] == row["tflops_anchor"]
    assert rows[keys[2]]["status"] == "error" and "c broke" in rows[keys[2]]["note"]
    assert "ms_rounds" not in rows[keys[2]]
    # no heat on the CPU: the first call is the first round's (estimate, then reps)
    assert calls[0] == "a"
    over = {key: dict(status="ok", note="") for key in keys}
    runner.over_budget = lambda: True
    run.Runner.time_interleaved(runner, case, over, steps, input_bytes=0)
    assert all(r["status"] == "skipped" and r["note"] == "time budget" for r in over.values())


def test_real_batches_timed_pair_interleaves_its_impls(monkeypatch):
    """benchmarks/real_batches.py ``timed_pair``: outputs compared with the last impl's, then
    forward and forward+backward of every impl timed in interleaved rounds (the mean, the
    rounds in the note)."""
    monkeypatch.setattr(rb, "ROWS", [])
    monkeypatch.setattr(rb, "peak", lambda fn, dev: (fn(), 0.5)[1])
    log = []

    def impl(scale):
        return lambda q, k, v: (torch.softmax(q @ k.transpose(-1, -2), -1) @ v) * scale
    x = torch.randn(1, 2, 8, 4)
    rb.timed_pair(drifting_timer(log), "s", "case", {"a": impl(1.0), "ref": impl(0.5)}, x, x, x, x,
                  1e6, 3.5e6, torch.device("cpu"))
    rows = {(r["impl"], r["pass"]): r for r in rb.ROWS}
    # round 1: a (1, 2), ref (3, 4); round 2 reversed: ref (5, 6), a (7, 8)
    assert rows[("a", "fwd")]["ms"] == 4.0 and rows[("ref", "fwd")]["ms"] == 4.0
    assert rows[("a", "fwd+bwd")]["ms"] == 5.0 and rows[("ref", "fwd+bwd")]["ms"] == 5.0
    assert rows[("a", "fwd")]["note"].startswith("max|diff|/max|ref| = 1.00e+00; mean of 2 interleaved rounds")
    assert rows[("ref", "fwd+bwd")]["peak_gib"] == 0.5


def test_records_carry_a_digest_of_the_code_that_ran(tmp_path):
    """benchmarks/run.py ``source_digest`` (``meta.source_sha256`` of every benchmark record):
    the same files give the same digest, a changed byte, a renamed file or a new module a
    different one; files outside ``sparseflash/**/*.py`` and ``benchmarks/*.py`` do not count."""
    from benchmarks import run

    (tmp_path / "sparseflash" / "kernels").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "sparseflash" / "kernels" / "a.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "b.py").write_text("y = 2\n")
    first = run.source_digest(tmp_path)
    assert len(first) == 64 and run.source_digest(tmp_path) == first
    (tmp_path / "benchmarks" / "results" / "combine.py").write_text("z = 3\n")
    (tmp_path / "README.md").write_text("text\n")
    assert run.source_digest(tmp_path) == first
    (tmp_path / "sparseflash" / "kernels" / "a.py").write_text("x = 2\n")
    changed = run.source_digest(tmp_path)
    assert changed != first
    (tmp_path / "sparseflash" / "kernels" / "a.py").rename(tmp_path / "sparseflash" / "kernels" / "c.py")
    assert run.source_digest(tmp_path) not in (first, changed)
    root = Path(__file__).resolve().parent.parent
    assert run.source_digest(root) == run.source_digest(root)


def test_cpu_backend_benchmark_times_this_tree_beside_a_revision(tmp_path):
    """benchmarks/cpu_backend.py: this tree's torch backend, the same at a git revision (loaded
    from ``git show``, here HEAD) and SDPA, interleaved; the two torch backends agree, and the
    results carry their command and versions."""
    import json
    import subprocess

    from benchmarks import cpu_backend

    root = Path(__file__).resolve().parent.parent
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True).returncode:
        pytest.skip("not a git checkout: no revision to load")
    assert cpu_backend.main(["--out", str(tmp_path), "--quick", "--rounds", "1", "--ref", "HEAD"]) == 0
    data = json.loads((tmp_path / "cpu_backend.json").read_text())
    rows = data["rows"]
    assert {r["impl"] for r in rows} == {"torch backend", "torch backend @HEAD", "sdpa (dense causal)"}
    assert len(rows) == 2 * 3 * len(cpu_backend.QUICK)
    assert all(r["ms"] > 0 for r in rows)
    for r in rows:
        if r["impl"] == "torch backend":
            diff = float(r["note"].split("(out, dq, dk, dv): ")[1])
            assert diff < 1e-4
            assert r["gflops"] > 0
    assert data["meta"]["command"].startswith("python -m benchmarks.cpu_backend --out")
    assert (tmp_path / "cpu_backend.csv").read_text().startswith("case,impl,mode,ms,gflops,note")


def test_gpu_shards_runs_a_k_selection_across_its_shards(tmp_path):
    """benchmarks/gpu_shards.sh with a -k expression (its fifth argument, spaces allowed) runs
    exactly the selected tests, spread over the shards; an @FILE of ids with one is refused."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    script = root / "benchmarks" / "gpu_shards.sh"
    expr = "preset_file_is_documented and not (dense or local)"
    proc = subprocess.run(["bash", str(script), "tests/test_presets.py", "2", "120", str(tmp_path), expr],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    counts = []
    for shard in sorted(tmp_path.glob("pytest_shard*.txt")):
        summary = [line for line in shard.read_text().splitlines() if " passed" in line]
        assert summary and "failed" not in summary[-1] and "error" not in summary[-1], shard.read_text()[-2000:]
        counts.append(int(summary[-1].split(" passed")[0].split()[-1]))
    wanted = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_presets.py",
                             "-k", expr], cwd=root, capture_output=True, text=True).stdout.count("::")
    assert len(counts) == 2 and sum(counts) == wanted > 2, (counts, wanted)
    # each finished test is named (-v), so a shard cut by its limit still shows what passed
    named = [line for shard in tmp_path.glob("pytest_shard*.txt") for line in shard.read_text().splitlines()
             if "::test_preset_file_is_documented" in line and " PASSED" in line]
    assert len(named) == wanted, named
    ids = tmp_path / "ids.txt"
    ids.write_text("tests/test_presets.py::test_required_presets_exist\n")
    refused = subprocess.run(["bash", str(script), f"@{ids}", "1", "60", str(tmp_path / "x"), expr],
                             cwd=root, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "K_EXPR" in refused.stderr


@pytest.mark.parametrize("args,shown", [(["--set", "NOPE=1"], "'NOPE=1'"),
                                        (["--set", "HOPPER_PERSISTENT=nope"], "'HOPPER_PERSISTENT=nope'"),
                                        (["--set"], "''")])
def test_ncu_fwd_refuses_a_bad_set_before_any_gpu_work(args, shown):
    # benchmarks/ncu_fwd.py --set NAME=VALUE sets a launch value before its forward runs (the
    # profile with one CTA per tile: --set HOPPER_PERSISTENT=False); a name launch lacks, a
    # value that is no Python literal, or no pair at all stops it with the argument named,
    # before it touches CUDA (this machine has none)
    import subprocess

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "ncu_fwd.py"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "--set wants NAME=VALUE" in proc.stderr and shown in proc.stderr
    assert "Traceback" not in proc.stderr
