"""benchmarks/shard_plan.py and its use in benchmarks/gpu_shards.sh: shards planned by recorded
durations, and the ids a cut run did not finish."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import shard_plan  # noqa: E402

SCRIPT = ROOT / "benchmarks" / "shard_plan.py"


def test_plan_puts_the_slowest_apart_and_runs_each_shard_shortest_first():
    ids = [f"t.py::test_{c}" for c in "abcdefg"]
    durations = {"t.py::test_a": 140.0, "t.py::test_b": 150.0, "t.py::test_c": 20.0, "t.py::test_d": 20.0,
                 "t.py::test_e": 130.0}
    shards, load = shard_plan.plan(ids + ["t.py::test_a"], 3, durations, default=5.0)
    assert sorted(sum(shards, [])) == sorted(ids)                 # each id once, the repeat dropped
    heavy = [next(k for k, s in enumerate(shards) if t in s) for t in ("t.py::test_a", "t.py::test_b", "t.py::test_e")]
    assert sorted(heavy) == [0, 1, 2]                              # the three slowest apart
    for shard in shards:
        costs = [durations.get(t, 5.0) for t in shard]
        assert costs == sorted(costs)                              # shortest first
    assert load == [sum(durations.get(t, 5.0) for t in s) for s in shards]
    assert max(load) == 160.0                                       # 470 s in all: at least 157 a shard
    # dealt out by line number, a and e (or b) would share a shard: the plan's makespan is lower
    by_line = [sum(durations.get(t, 5.0) for n, t in enumerate(ids) if n % 3 == k) for k in range(3)]
    assert max(by_line) > max(load)


def test_plan_refuses_bad_arguments():
    with pytest.raises(ValueError, match="num_shards"):
        shard_plan.plan(["a::b"], 0, {}, 5.0)
    with pytest.raises(ValueError, match="default"):
        shard_plan.plan(["a::b"], 2, {}, -1.0)


def test_recorded_durations_add_a_test_s_phases_and_keep_its_largest_run(tmp_path):
    (tmp_path / "a.txt").write_text(
        "============ slowest 10 durations ============\n"
        "12.50s call     tests/test_x.py::test_one[rows[-1, 0, 0]]\n"
        "1.50s setup    tests/test_x.py::test_one[rows[-1, 0, 0]]\n"
        "3.00s call     tests/test_x.py::test_two\n"
        "(6 durations < 0.005s hidden.  Use -vv to show these durations.)\n"
        "3 passed in 20.00s\n")
    (tmp_path / "b.txt").write_text("9.00s call     tests/test_x.py::test_one[rows[-1, 0, 0]]\n"
                                    "7.25s call     tests/test_x.py::test_two\n")
    got = shard_plan.recorded_durations([tmp_path / "a.txt", tmp_path / "b.txt"])
    assert got == {"tests/test_x.py::test_one[rows[-1, 0, 0]]": 14.0, "tests/test_x.py::test_two": 7.25}


def test_unfinished_lists_the_ids_no_log_reports(tmp_path):
    ids = ["t.py::test_a", "t.py::test_b[x y]", "t.py::test_c", "t.py::test_d", "t.py::test_e", "t.py::test_f"]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n\n")
    (tmp_path / "s0.txt").write_text("t.py::test_a PASSED                      [ 50%]\n"
                                     "t.py::test_b[x y] FAILED                 [100%]\n")
    (tmp_path / "s1.txt").write_text("t.py::test_d SKIPPED (no GPU)            [ 50%]\n"
                                     "EARLY FAILED t.py::test_e\n"
                                     "t.py::test_f ")                       # cut while running
    proc = subprocess.run([sys.executable, str(SCRIPT), "unfinished", str(tmp_path / "ids.txt"),
                           str(tmp_path / "s0.txt"), str(tmp_path / "s1.txt")],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines() == ["t.py::test_c", "t.py::test_f"]


@pytest.mark.parametrize("args,shown", [(["plan", "{missing}", "2", "{out}"], "ids: no such file"),
                                        (["plan", "{ids}", "0", "{out}"], "num_shards must be at least 1"),
                                        (["plan", "{ids}", "2", "{out}", "--default", "-3"], "--default must be"),
                                        (["unfinished", "{ids}", "{missing}"], "logs: no such file")])
def test_cli_names_the_bad_argument(tmp_path, args, shown):
    (tmp_path / "ids.txt").write_text("t.py::test_a\n")
    fill = {"missing": str(tmp_path / "nope.txt"), "out": str(tmp_path / "out"), "ids": str(tmp_path / "ids.txt")}
    proc = subprocess.run([sys.executable, str(SCRIPT)] + [a.format(**fill) for a in args],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and shown in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_shards_lists_what_a_cut_shard_left(tmp_path):
    """gpu_shards.sh over a file whose slow test outlasts the limit: the fast ones pass, and
    OUT_DIR/not_run.txt holds the slow one, ready for @FILE."""
    (tmp_path / "test_tiny.py").write_text(
        "import time\n"
        "def test_fast_1():\n    pass\n"
        "def test_fast_2():\n    pass\n"
        "def test_slow():\n    time.sleep(60)\n")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_shards.sh"), "test_tiny.py", "1", "15", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    log = (out / "pytest_shard0.txt").read_text()
    assert "test_tiny.py::test_fast_1 PASSED" in log and "test_tiny.py::test_fast_2 PASSED" in log
    assert (out / "not_run.txt").read_text().splitlines() == ["test_tiny.py::test_slow"]
    assert "1 of 3 ids not finished" in proc.stdout
