"""benchmarks/fa4_carry.sh: FlashAttention-4's wheels split into folders a device call can carry.

The device joins the pieces with fixed commands (the script's four calls), so every size of the
fetched wheel must leave the same five pieces, and joined in that order they must give the wheel
back byte for byte.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fa4_carry.sh"
CUT = 1000  # FA4_SPLIT_BYTES here; the script's default is 25,000,000
FETCH_CUT = 2 * CUT  # ../shared/fa4/fetch.sh splits the wheel in parts of twice the script's cut

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("split") is None or shutil.which("git") is None,
    reason="needs bash, coreutils' split and git",
)


def _fetched(root: Path, wheel: bytes) -> None:
    """Lay out .fa4a/.fa4b as fetch.sh does: part.aa in .fa4a, later parts and small wheels in .fa4b."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".fa4a").mkdir()
    (root / ".fa4b").mkdir()
    parts = [wheel[i:i + FETCH_CUT] for i in range(0, len(wheel), FETCH_CUT)]
    (root / ".fa4a" / "part.aa").write_bytes(parts[0])
    for name, part in zip(("ab", "ac", "ad"), parts[1:]):
        (root / ".fa4b" / f"part.{name}").write_bytes(part)
    (root / ".fa4b" / "BIGNAME").write_text("big-1.0-py3-none-any.whl\n")
    (root / ".fa4b" / "small_a-1.0-py3-none-any.whl").write_bytes(b"a" * 10)
    (root / ".fa4b" / "small_b-1.0-py3-none-any.whl").write_bytes(b"b" * 20)


def _run(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, FA4_SPLIT_BYTES=str(CUT))
    return subprocess.run(["bash", str(SCRIPT)], cwd=root, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("size", [4 * CUT, 3 * CUT + 7, 2 * CUT + 1, 2 * CUT, CUT + 3, CUT, 5])
def test_fa4_carry_pieces_join_back_into_the_wheel(tmp_path, size):
    wheel = os.urandom(size)
    _fetched(tmp_path, wheel)
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr
    pieces = {d: sorted(p.name for p in (tmp_path / d).iterdir())
              for d in (".fa4c", ".fa4d", ".fa4e", ".fa4f", ".fa4g")}
    assert pieces == {
        ".fa4c": ["small_a-1.0-py3-none-any.whl", "small_b-1.0-py3-none-any.whl"],
        ".fa4d": ["xaa"], ".fa4e": ["xab"], ".fa4f": ["yaa"], ".fa4g": ["BIGNAME", "yab"],
    }
    # the device's joins: call 2 makes part.aa of xaa and xab, call 4 the wheel of part.aa, yaa, yab
    joined = b"".join((tmp_path / p).read_bytes()
                      for p in (".fa4d/xaa", ".fa4e/xab", ".fa4f/yaa", ".fa4g/yab"))
    assert joined == wheel
    for p in (".fa4d/xaa", ".fa4e/xab", ".fa4f/yaa", ".fa4g/yab"):
        assert (tmp_path / p).stat().st_size <= CUT
    assert not (tmp_path / ".fa4a").exists() and not (tmp_path / ".fa4b").exists()
    exclude = (tmp_path / ".git" / "info" / "exclude").read_text().split()
    assert {"/.fa4c/", "/.fa4d/", "/.fa4e/", "/.fa4f/", "/.fa4g/"} <= set(exclude)
    # a second run finds the split done and only prints the commands
    again = _run(tmp_path)
    assert again.returncode == 0 and "already split" in again.stdout


def test_fa4_carry_refuses_a_wheel_too_large_for_its_pieces(tmp_path):
    _fetched(tmp_path, os.urandom(4 * CUT + 1))
    r = _run(tmp_path)
    assert r.returncode == 3
    assert "widen the split" in r.stderr


def test_fa4_carry_asks_for_the_fetch_first(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    r = _run(tmp_path)
    assert r.returncode == 2
    assert "fetch.sh" in r.stderr
