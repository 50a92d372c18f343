"""Named presets: every file parses, documents its source and parameters, and loads with
overrides; unknown names and bad values are clear errors; the files are found both in a
source tree and (see test_presets_found_from_another_cwd) without the repo on the cwd."""
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import sparseflash as sf
from sparseflash import PatternError
from sparseflash.presets import Param, Preset, describe, load, presets

REPO = pathlib.Path(__file__).resolve().parent.parent
REQUIRED = ["dense", "local", "strided", "dilated", "fixed", "butterfly", "pixelfly", "bigbird", "longformer"]


def test_required_presets_exist():
    names = presets()
    assert names == sorted(names)
    assert set(REQUIRED) <= set(names)
    assert sf.presets() == names


@pytest.mark.parametrize("name", presets())
def test_preset_file_is_documented_and_parses(name):
    info = describe(name)
    assert isinstance(info, Preset) and info.name == name
    header = info.header
    # a source: a paper with a year (and authors, for everything but dense attention)
    assert re.search(r"(19|20)\d\d", header), header
    assert "Source:" in header
    # every parameter is declared with a description and used in the text; nothing undeclared
    used = set(re.findall(r"\$([A-Za-z_]\w*)", info.text))
    assert used == {p.name for p in info.params}
    for p in info.params:
        assert p.description, f"{name}: parameter {p.name} has no description"
        assert isinstance(p.default, (int, tuple))
    pattern = load(name)
    assert isinstance(pattern, sf.Pattern)
    assert sf.parse(str(pattern)) == pattern
    layout = sf.compile(pattern, 4096, block_size=128, causal=True)
    assert 0 < layout.nnz
    text = str(info)
    assert name in text and info.title in text


@pytest.mark.parametrize("name,params,expected", [
    ("dense", {}, sf.dense()),
    ("local", {}, sf.local(3)),
    ("local", {"window": 7}, sf.local(7)),
    ("strided", {"stride": 4}, sf.strided(4)),
    ("dilated", {"window": 2, "dilation": 3}, sf.dilated(2, 3)),
    ("fixed", {"stride": 16, "summary": 2}, sf.fixed(16, 2)),
    ("butterfly", {}, sf.butterfly()),
    ("pixelfly", {"globals": [0, -1]}, sf.butterfly() | sf.global_blocks([0, -1])),
    ("bigbird", {}, sf.bigbird(window=1, globals=[0, -1], random=3, seed=0)),
    ("bigbird", {"window": 3, "globals": 2, "random": 3}, sf.bigbird(window=3, globals=2, random=3)),
    ("longformer", {"window": 4, "globals": [0]}, sf.longformer(window=4, globals=[0])),
    ("sparse_transformer_strided", {}, sf.local(7) | sf.strided(8)),
    ("sparse_transformer_strided", {"stride": 16, "window": 15}, sf.local(15) | sf.strided(16)),
], ids=lambda x: str(x))
def test_load_with_overrides(name, params, expected):
    assert load(name, **params) == expected
    assert sf.load(name, **params) == expected


def test_defaults_match_header():
    info = describe("bigbird")
    assert info.defaults == {"window": 1, "globals": (0, -1), "random": 3, "seed": 0}
    assert [p.name for p in info.params] == ["window", "globals", "random", "seed"]
    assert load("bigbird", seed=np.int64(4)) == sf.bigbird(1, [0, -1], 3, 4)


def test_unknown_preset_lists_available():
    with pytest.raises(PatternError) as info:
        load("bigbrid")
    msg = str(info.value)
    assert "'bigbrid'" in msg
    for name in REQUIRED:
        assert name in msg
    with pytest.raises(PatternError):
        describe("../pyproject")


@pytest.mark.parametrize("params,match", [
    ({"widow": 3}, "no parameter 'widow'.*window"),
    ({"window": -1}, "window must be >= 0"),
    ({"window": "3"}, "int or a list of ints"),
    ({"window": 2.5}, "int or a list of ints"),
    ({"window": "1) | dense("}, "int or a list of ints"),
    ({"window": [1, 2]}, "expected an int"),
    ({"window": True}, "int or a list of ints"),
])
def test_bad_overrides(params, match):
    with pytest.raises(PatternError, match=match):
        load("local", **params)


def test_override_errors_point_into_the_file():
    with pytest.raises(PatternError) as info:
        load("bigbird", window=-2)
    err = info.value
    assert "preset 'bigbird'" in str(err) and "line" in str(err)
    assert err.text[err.position:].startswith("$window")


def test_param_line_format(tmp_path, monkeypatch):
    """The header scheme itself: good and bad parameter lines in a scratch preset folder."""
    import importlib

    mod = importlib.import_module("sparseflash.presets")  # the module (sf.presets is the function)
    files = {
        "good": "# A title.\n# Source: nobody, 2024.\n# param w = 2   a window\n# param g = [0, -1]\nlocal($w) | rows($g)\n",
        "bad_value": "# t\n# param w = two\nlocal($w)\n",
        "bad_list": "# t\n# param w = [1 2]\nlocal($w)\n",
        "twice": "# t\n# param w = 1\n# param w = 2\nlocal($w)\n",
        "undeclared": "# t\nlocal($w)\n",
        "broken": "# t\nlocal(\n",
    }
    monkeypatch.setattr(mod, "_preset_files", lambda: {k: (v, f"{k}.sf") for k, v in files.items()})
    mod._index.cache_clear()
    try:
        with pytest.raises(PatternError, match="param"):
            mod.presets()  # a bad header fails loudly, naming the file
        for bad in ("bad_value", "bad_list", "twice"):
            one = {bad: files[bad]}
            monkeypatch.setattr(mod, "_preset_files", lambda one=one: {k: (v, f"{k}.sf") for k, v in one.items()})
            mod._index.cache_clear()
            with pytest.raises(PatternError, match=f"{bad}.sf"):
                mod.presets()
        ok = {k: files[k] for k in ("good", "undeclared", "broken")}
        monkeypatch.setattr(mod, "_preset_files", lambda: {k: (v, f"{k}.sf") for k, v in ok.items()})
        mod._index.cache_clear()
        assert mod.presets() == ["broken", "good", "undeclared"]
        assert mod.load("good") == sf.local(2) | sf.rows([0, -1])
        assert mod.describe("good").params == (Param("w", 2, "a window"), Param("g", (0, -1), ""))
        with pytest.raises(PatternError, match=r"unknown parameter \$w"):
            mod.load("undeclared")
        with pytest.raises(PatternError, match="broken.sf"):
            mod.load("broken")
    finally:
        mod._index.cache_clear()


def test_presets_found_from_another_cwd(tmp_path):
    """With PYTHONPATH=<repo> from an unrelated cwd (no install), the repo's patterns/ is used."""
    code = "import sparseflash as sf; print(','.join(sf.presets())); print(sf.load('bigbird'))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names, text = out.stdout.strip().splitlines()
    assert names.split(",") == presets()
    assert sf.parse(text) == load("bigbird")


def test_shipped_as_package_data():
    """pyproject maps sparseflash._presets to patterns/ and ships every *.sf in it."""
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "sparseflash._presets" in cfg["packages"]
    assert cfg["package-dir"]["sparseflash._presets"] == "patterns"
    assert "*.sf" in cfg["package-data"]["sparseflash._presets"]
    assert sorted(p.stem for p in (REPO / "patterns").glob("*.sf")) == presets()
