"""Packaging: the public namespace, the callable ``presets`` module, and what the sdist and
wheel carry (the license, the py.typed marker, and the test helpers the sdist's tests import)."""
import builtins
import shutil
import subprocess
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import pytest

import sparseflash as sf

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- namespace
def test_star_import_shadows_no_builtin_and_no_stdlib_module():
    shadowed = set(sf.__all__) & (set(dir(builtins)) | set(sys.stdlib_module_names))
    assert not shadowed


def test_every_name_in_all_exists_and_is_listed_once():
    assert len(sf.__all__) == len(set(sf.__all__))
    assert [name for name in sf.__all__ if not hasattr(sf, name)] == []


def test_star_import_leaves_builtins_alone():
    namespace = {}
    exec("from sparseflash import *", namespace)
    assert "compile" not in namespace and "random" not in namespace
    assert namespace["dense"] is sf.dense


def test_compile_and_random_are_still_attributes():
    layout = sf.compile(sf.random(1), 256, block_size=16)
    assert layout.num_q_blocks == 16 and layout.max_row_blocks == 1


def test_presets_is_the_module_and_still_callable():
    import sparseflash.presets as module

    assert isinstance(module, types.ModuleType) and sf.presets is module
    assert module.load("local", window=1) == sf.local(1)
    assert sf.presets() == module.presets() == sorted(module.presets())
    assert "bigbird" in sf.presets()
    from sparseflash import presets

    assert presets is module and callable(presets)


# ----------------------------------------------------------------------------- distributions
def test_typed_marker_and_license_exist():
    assert (ROOT / "sparseflash" / "py.typed").is_file()
    assert "BSD 3-Clause" in (ROOT / "LICENSE").read_text()


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist member names, wheel member names), built from a copy of the source tree."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache",
        "results"))
    out = tmp / "out"
    code = f"from setuptools import build_meta as b; b.build_sdist({str(out)!r}); b.build_wheel({str(out)!r})"
    subprocess.run([sys.executable, "-c", code], cwd=src, check=True, capture_output=True, timeout=300)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    with tarfile.open(sdist) as tar:
        sdist_names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    with zipfile.ZipFile(wheel) as whl:
        wheel_names = set(whl.namelist())
    return sdist_names, wheel_names


def test_sdist_carries_the_test_helpers_presets_and_docs(dists):
    sdist, _ = dists
    wanted = {"LICENSE", "tests/conftest.py", "tests/pattern_strategies.py",
              "docs/make_pictures.py", "docs/layout.md", "patterns/bigbird.sf"}
    assert wanted <= sdist, sorted(wanted - sdist)
    assert {f"tests/{p.name}" for p in (ROOT / "tests").glob("*.py")} <= sdist


def test_wheel_carries_py_typed_and_license(dists):
    _, wheel = dists
    assert "sparseflash/py.typed" in wheel
    assert any(name.endswith("licenses/LICENSE") or name.endswith("/LICENSE") for name in wheel)
    assert "sparseflash/_presets/bigbird.sf" in wheel


# ----------------------------------------------------------------------------- docs
def _markdown_files():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "benchmarks").glob("*.md"))]  # benchmarks/ is not in the sdist
    return [f for f in files if f.is_file()]


def test_docs_cite_no_file_outside_the_repository():
    # the docs cited ANCHORS.md, which lived outside the repository; it is docs/anchors.md now
    for path in _markdown_files() + sorted((ROOT / "sparseflash").glob("*.py")):
        if path.name == "anchors.md":  # its provenance line names the original
            continue
        assert "ANCHORS.md" not in path.read_text(encoding="utf-8"), path
    assert "H100" in (ROOT / "docs" / "anchors.md").read_text(encoding="utf-8")


def test_relative_markdown_links_resolve():
    import re

    broken = []
    for path in _markdown_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            linked = (path.parent / target.split("#")[0]).resolve()
            if not (ROOT / "benchmarks").is_dir() and (ROOT / "benchmarks") in linked.parents:
                continue  # an unpacked sdist has no benchmarks/
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []


def test_public_functions_are_annotated():
    import inspect

    owned_elsewhere = set()
    missing = []
    for name in [*sf.__all__, "compile", "random"]:
        fn = getattr(sf, name)
        if not inspect.isfunction(fn) or name in owned_elsewhere:
            continue
        sig = inspect.signature(fn)
        missing += [f"{name}({p.name})" for p in sig.parameters.values()
                    if p.annotation is inspect.Parameter.empty
                    and p.kind is not inspect.Parameter.VAR_KEYWORD]
        if sig.return_annotation is inspect.Signature.empty:
            missing.append(f"{name} -> ?")
    assert missing == []


def test_star_import_leaves_torch_nn_alone():
    namespace = {"nn": "torch.nn"}
    exec("from sparseflash import *", namespace)
    assert namespace["nn"] == "torch.nn"
    assert sf.nn.SparseSelfAttention is sf.SparseSelfAttention
