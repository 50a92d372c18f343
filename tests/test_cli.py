"""The command line: show, presets, demo, error exits, ``python -m sparseflash``."""
import os
import re
import subprocess
import sys

import pytest

import sparseflash as sf
from sparseflash.cli import main

# A demo small enough for a 2-core CPU: estimate at 4K tokens, run attention at 512.
SMALL_DEMO = ["demo", "--seq-len", "4096", "--cpu-seq-len", "512", "--heads", "2", "--head-dim", "32",
              "--repeats", "1", "--run-device", "cpu", "--width", "16"]


def run_main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, *fragments):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sparseflash: error: ")
    assert "Traceback" not in err + out
    for fragment in fragments:
        assert fragment in lines[0]


def test_show_expression(capsys):
    code, out, err = run_main(capsys, "show", "local(2) | global_blocks(1)", "--seq-len", "3000",
                              "--block-size", "64", "--heads", "4", "--head-dim", "64")
    assert code == 0 and err == ""
    layout = sf.compile(sf.local(2) | sf.global_blocks(1), 3000, block_size=64, num_heads=4)
    assert f"density {layout.density:.2%}" in out
    assert f"nnz {layout.nnz:,}" in out
    assert re.search(r"compiled in \d+\.\d+ ms", out)
    # the map as BlockLayout.to_string draws it, then both estimate tables
    assert layout.to_string() in out
    assert out.count("sparseflash (ours)") == 2
    assert out.count("dense FlashAttention") == 2 and out.count("standard attention") == 2
    est = sf.estimate(layout, 64)
    assert f"{est.predicted_ms:.3f}" in out


def test_show_preset_with_params_causal_and_kv_len(capsys):
    code, out, _ = run_main(capsys, "show", "bigbird", "-p", "window=2", "-p", "globals=[0,-1]",
                            "--seq-len", "2k", "--kv-len", "3k", "--causal", "--block-size", "128")
    assert code == 0
    pattern = sf.load("bigbird", window=2, globals=[0, -1])
    assert f"pattern: {pattern}" in out
    layout = sf.compile(pattern, 2048, kv_len=3072, causal=True)
    assert f"nnz {layout.nnz:,}" in out and "causal" in out


def test_show_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "layout.png"
    code, out, _ = run_main(capsys, "show", "butterfly()", "--seq-len", "4096", "--png", str(path))
    assert code == 0 and f"wrote {path}" in out
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_presets_lists_every_preset(capsys):
    code, out, _ = run_main(capsys, "presets")
    assert code == 0
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert names == list(sf.presets())
    for line in out.strip().splitlines():
        name, text = line.split(None, 1)
        assert sf.parse(text) == sf.load(name)


def test_demo_runs_and_checks_attention(capsys):
    code, out, err = run_main(capsys, *SMALL_DEMO)
    assert code == 0, err
    assert "parse(text) == pattern: True" in out
    assert "(cached:" in out
    assert out.count("sparseflash (ours)") == 2
    assert "attention on cpu (backend=torch, float32): B=1 H=2 N=512 d=32" in out
    errors = re.findall(r"vs float64 reference \(head 0\): (\S+)\s+ok", out)
    assert len(errors) == 2 and all(float(e) < 1e-4 for e in errors)


def test_demo_fails_on_a_wrong_kernel(capsys, monkeypatch):
    import sparseflash.attention as attention

    real = attention.sparse_attention
    monkeypatch.setattr(attention, "sparse_attention", lambda *a, **k: real(*a, **k) * 1.01)
    code, out, _ = run_main(capsys, *SMALL_DEMO)
    assert code == 1
    assert "FAIL" in out


@pytest.mark.parametrize("argv,fragments,code", [
    (["show", "local(", "--seq-len", "1024"], ["position 6"], 1),
    (["show", "__import__('os').system('x')", "--seq-len", "1024"], ["position"], 1),
    (["show", "local(1)", "--seq-len", "-3"], ["--seq-len"], 2),
    (["show", "local(1)", "--seq-len", "lots"], ["--seq-len"], 2),
    (["show", "local(1)"], ["--seq-len"], 2),
    (["show", "local(1)", "--seq-len", "1000", "--block-size", "100"], ["block_size"], 1),
    (["show", "local(1)", "--seq-len", "1000", "-p", "window=2"], ["presets only"], 2),
    (["show", "local", "--seq-len", "1000", "-p", "nope=2"], ["nope"], 1),
    (["show", "local(1)", "--seq-len", "1000", "--device", "tpu"], ["device"], 1),
    (["show", "per_head(local(1), dense())", "--seq-len", "1000", "--heads", "3"], ["num_heads"], 1),
    (["show", "per_head(local(1), dense())", "--seq-len", "1000", "--heads", "2", "--head", "2"],
     ["head"], 1),
    (["frobnicate"], ["invalid choice"], 2),
    (["demo", "--pattern", "local(-1)"], ["window"], 1),
], ids=["parse-eof", "no-eval", "negative-len", "bad-len", "missing-len", "block-size",
        "param-not-preset", "unknown-param", "unknown-device", "per-head-count", "head-out-of-range",
        "bad-command",
        "demo-bad-pattern"])
def test_errors_are_one_line(capsys, argv, fragments, code):
    got, out, err = run_main(capsys, *argv)
    assert got == code
    assert_one_line_error(got, out, err, *fragments)


def test_oversized_layout_is_a_one_line_error(capsys):
    # used to print a 28-line traceback (a MemoryError after 20 s); now compile refuses at once
    code, out, err = run_main(capsys, "show", "dense", "--seq-len", "1M", "--block-size", "16")
    assert code == 1 and out == ""
    assert_one_line_error(code, out, err, "seq_len=1048576", "block_size=16")


def test_memory_error_is_a_one_line_error(capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(sf, "compile", out_of_memory)
    code, out, err = run_main(capsys, "show", "local(1)", "--seq-len", "1k")
    assert code == 1
    assert_one_line_error(code, out, err, "out of memory", "--block-size")


@pytest.mark.parametrize("extra,fragment", [
    (["--device", "tpu"], "--device"),
    (["--png", "{tmp}/missing/map.png"], "does not exist"),
    (["--png", "{tmp}/map.nope"], "image format"),
    (["--heads", "2", "--head", "5"], "--head"),
], ids=["device", "png-folder", "png-format", "head"])
def test_show_checks_arguments_before_drawing(capsys, tmp_path, extra, fragment):
    if "--png" in extra:
        pytest.importorskip("matplotlib")
    extra = [x.replace("{tmp}", str(tmp_path)) for x in extra]
    code, out, err = run_main(capsys, "show", "local(1)", "--seq-len", "4k", *extra)
    assert out == ""  # nothing drawn or estimated first
    assert_one_line_error(code, out, err, fragment)
    assert code == 1


def test_demo_checks_device_first(capsys):
    code, out, err = run_main(capsys, "demo", "--device", "tpu")
    assert out == ""
    assert_one_line_error(code, out, err, "--device")


def _python_m(*argv):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(sf.__file__)))] + sys.path))
    return subprocess.run([sys.executable, "-m", "sparseflash", *argv], capture_output=True, text=True,
                          env=env, timeout=120)


def test_python_dash_m():
    ok = _python_m("show", "fixed(4)", "--seq-len", "2048", "--width", "16")
    assert ok.returncode == 0, ok.stderr
    assert "density" in ok.stdout and "standard attention" in ok.stdout
    bad = _python_m("show", "fixed(4) |", "--seq-len", "2048")
    assert bad.returncode == 1 and bad.stdout == ""
    assert_one_line_error(bad.returncode, bad.stdout, bad.stderr, "position")
    bare = _python_m()
    assert bare.returncode == 0 and "usage: sparseflash" in bare.stdout
    version = _python_m("--version")
    assert version.returncode == 0 and sf.__version__ in version.stdout


@pytest.mark.parametrize("doc", ["README.md", "docs/attention.md"])
def test_doc_python_examples_run(doc):
    # every ```python block of the file, in order, as one program (CPU, small sizes)
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / doc
    if not path.exists():
        pytest.skip(f"no {doc} in this tree")
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)
    assert namespace["q"].grad is not None and namespace["k2"].grad is not None


def test_readme_test_command_is_what_ci_runs():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    ci, readme = root / ".ci" / "run", root / "README.md"
    if not (ci.exists() and readme.exists()):
        pytest.skip("no README or .ci/run in this tree")
    quick_start = re.search(r"## Quick start.*?```bash\n(.*?)```", readme.read_text(), re.S).group(1)
    commands = quick_start.strip().splitlines()
    assert len(commands) == 2 and "sparseflash demo" in commands[0]
    assert commands[1] in ci.read_text().splitlines()


def test_show_estimates_with_options(capsys):
    code, out, _ = run_main(capsys, "show", "local(2)", "--seq-len", "4k", "--heads", "4", "--causal",
                            "--device", "h200", "--dropout", "0.1", "--softcap", "30", "--alibi")
    assert code == 0
    assert out.count("included: dropout, softcap, alibi") == 2          # forward, forward+backward
    code, out, _ = run_main(capsys, "show", "local(2)", "--seq-len", "4k", "--dropout", "0.1")
    assert code == 0 and out.count("included: dropout") == 2             # h100 (the default) since stop 62
    code, out, _ = run_main(capsys, "show", "local(2)", "--seq-len", "4k", "--device", "a100",
                            "--dropout", "0.1")
    assert code == 0 and out.count("not in the times: dropout") == 2     # a100: not measured
    plain = run_main(capsys, "show", "local(2)", "--seq-len", "4k", "--device", "h200")[1]
    assert "included" not in plain


@pytest.mark.parametrize("args,match", [
    (["--dropout", "1"], "--dropout: expected a probability in"),
    (["--dropout", "x"], "--dropout: expected a probability in"),
    (["--softcap", "-2"], "--softcap: expected a finite number >= 0"),
    (["--softcap", "inf"], "--softcap: expected a finite number >= 0"),
])
def test_show_refuses_bad_options(capsys, args, match):
    code, _, err = run_main(capsys, "show", "local(2)", "--seq-len", "4k", *args)
    assert code == 2 and match in err


def test_show_plans_context_parallel_ranks(capsys):
    # --world: a row per rank from its shard plan; every stored block is computed by exactly
    # one rank, the received blocks are the plan's, and each rank's time is the estimate of
    # its own call
    from sparseflash.distributed import shard_plan

    pattern = sf.bigbird(window=1, globals=1, random=2)
    code, out, err = run_main(capsys, "show", "bigbird(window=1, globals=1, random=2)", "--seq-len", "8k",
                              "--causal", "--heads", "2", "--world", "4", "--sharding", "zigzag",
                              "--link-gbps", "100", "--device", "h200")
    assert code == 0 and err == ""
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+[\d,]+\s+[\d,]+\s+\d+\s", line)]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3]
    layout = sf.compile(pattern, 8192, causal=True, num_heads=2)
    assert sum(int(r[1].replace(",", "")) for r in rows) == layout.nnz
    for rank, row in enumerate(rows):
        plan = shard_plan(pattern, 8192, 4, rank, 128, True, 2, None, "zigzag", 2)
        assert int(row[2].replace(",", "")) == plan.blocks_received
        mb = 2 * plan.blocks_received * 128 * 2 * 128 * 2 / 1e6             # K and V, bf16
        assert row[4] == f"{mb:.1f}" and row[5] == f"{mb * 1e6 / 100 / 1e6:.3f}"
        est = sf.estimate(plan.layout, 128, device="h200", backward=True)
        assert row[7] == f"{est.predicted_ms:.3f}"
    assert "slowest rank" in out and "on one GPU" in out


@pytest.mark.parametrize("args,match", [
    (["--world", "3"], "--seq-len 4096 must be a multiple of 384"),
    (["--world", "2", "--sharding", "zigzag", "--seq-len", "384"], "multiple of 512 (world x block_size x 2"),
    (["--world", "2", "--kv-len", "8k"], "leave --kv-len unset"),
    (["--world", "2", "--alibi", "--sharding", "zigzag"], "--alibi across ranks needs --sharding contiguous"),
    (["--link-gbps", "300"], "--link-gbps needs --world 2 or more"),
], ids=["not-a-multiple", "zigzag-unit", "kv-len", "alibi-zigzag", "link-alone"])
def test_show_world_checks_arguments_before_drawing(capsys, args, match):
    code, out, err = run_main(capsys, "show", "local(2)", "--seq-len", "4k", *args)
    assert out == ""
    assert_one_line_error(code, out, err, match)
