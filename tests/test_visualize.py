"""ASCII maps and matplotlib figures of a layout."""
import math
import sys

import numpy as np
import pytest

import sparseflash as sf
from sparseflash.visualize import RAMP, block_fraction_map, layout_to_string


def map_rows(text):
    """The framed map's rows, without the frame; checks the frame on the way."""
    lines = text.splitlines()
    top = lines.index(next(ln for ln in lines if ln.startswith("+")))
    bottom = len(lines) - 1 - lines[::-1].index(lines[top])
    assert lines[top] == lines[bottom] and set(lines[top][1:-1]) == {"-"}
    rows = lines[top + 1:bottom]
    assert all(r[0] == "|" and r[-1] == "|" and len(r) == len(lines[top]) for r in rows)
    return [r[1:-1] for r in rows], lines[bottom + 1:]


def expected_fraction(dense, factor):
    """Per-cell fraction by brute force over the dense mask."""
    nq, nk = dense.shape
    cq, ck = math.ceil(nq / factor), math.ceil(nk / factor)
    out = np.zeros((cq, ck))
    for a in range(cq):
        for b in range(ck):
            out[a, b] = dense[a * factor:(a + 1) * factor, b * factor:(b + 1) * factor].mean()
    return out


def test_small_grid_is_one_cell_per_block():
    rng = np.random.default_rng(0)
    mask = rng.random((11, 7)) < 0.4
    # both lengths 3 short of whole blocks: the keys' blocks are the last 7 absolute ones
    layout = sf.compile(sf.from_mask(mask), 11 * 32 - 3, kv_len=7 * 32 - 3, block_size=32)
    rows, legend = map_rows(layout.to_string())
    assert len(rows) == 11 and all(len(r) == 14 for r in rows)
    got = np.array([[r[2 * j] for j in range(7)] for r in rows])
    assert all(r[2 * j] == r[2 * j + 1] for r in rows for j in range(7))
    np.testing.assert_array_equal(got == RAMP[-1], layout.to_dense()[0])
    np.testing.assert_array_equal(got == " ", ~layout.to_dense()[0])
    assert len(legend) == 1 and "11x7 blocks of 32 tokens" in legend[0]


@pytest.mark.parametrize("nq,nk,width", [(300, 200, 64), (129, 513, 40), (64, 64, 64), (5, 90, 10)],
                         ids=["tall", "wide", "exact", "tiny-width"])
def test_downsampling_shape_and_shading(nq, nk, width):
    rng = np.random.default_rng(nq + nk)
    # mix of empty, full and partial regions
    mask = rng.random((nq, nk)) < rng.random((nq, 1))
    mask[: nq // 3] = False
    mask[-(nq // 4):, : nk // 2] = True
    layout = sf.compile(sf.from_mask(mask), nq * 16, kv_len=nk * 16, block_size=16)
    factor = math.ceil(max(nq, nk) / (width // 2))
    fraction, got_factor = block_fraction_map(layout, 0, width // 2)
    assert got_factor == factor
    np.testing.assert_allclose(fraction, expected_fraction(mask, factor))

    rows, legend = map_rows(layout_to_string(layout, width=width))
    assert len(rows) == math.ceil(nq / factor)
    assert len(rows[0]) == 2 * math.ceil(nk / factor) <= width
    chars = np.array([list(r[::2]) for r in rows])
    assert np.array_equal(chars == " ", fraction == 0)
    assert np.array_equal(chars == RAMP[-1], fraction == 1)
    partial = (fraction > 0) & (fraction < 1)
    levels = np.vectorize(RAMP.index)(chars)
    # shading is monotone in the fraction and partial cells use the middle of the ramp
    assert np.all((levels[partial] >= 1) & (levels[partial] <= len(RAMP) - 2))
    order = np.argsort(fraction[partial], kind="stable")
    assert np.all(np.diff(levels[partial][order]) >= 0)
    assert f"{factor}x{factor} blocks" in legend[0]


def test_heads_and_causal():
    layout = sf.compile(sf.per_head(sf.local(0), sf.dense()), 8 * 64, block_size=64, causal=True,
                        num_heads=2)
    diag, _ = map_rows(layout.to_string(head=0))
    lower, _ = map_rows(layout.to_string(head=1))
    assert diag != lower
    assert [r.count(RAMP[-1]) for r in lower] == [2 * (i + 1) for i in range(8)]
    assert [r.count(RAMP[-1]) for r in diag] == [2] * 8
    for bad in (2, -1, 1.0):
        with pytest.raises(ValueError, match="head"):
            layout.to_string(head=bad)
    with pytest.raises(ValueError, match="width"):
        layout.to_string(width=1)


def test_million_tokens_is_fast_and_bounded():
    layout = sf.compile(sf.local(3) | sf.strided(64), 1 << 20, block_size=128)
    rows, _ = map_rows(layout.to_string(width=64))
    assert len(rows) == 32 and all(len(r) == 64 for r in rows)


def test_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    layout = sf.compile(sf.per_head(sf.local(1), sf.butterfly(), sf.fixed(4)), 2000, block_size=64,
                        num_heads=3)
    path = tmp_path / "layout.png"
    fig = sf.plot(layout, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = [ax for ax in fig.get_axes() if ax.get_label() != "<colorbar>"]
    assert len(axes) == 3 + 1          # a mask per head plus the row-density histogram
    assert f"{layout.density:.2%}" in fig._suptitle.get_text()
    assert f"{layout.nnz:,}" in fig._suptitle.get_text()
    image = axes[1].get_images()[0].get_array()
    np.testing.assert_allclose(np.asarray(image), layout.to_dense()[1].astype(float))
    # histogram covers every query block of the drawn heads
    assert sum(p.get_height() for p in axes[-1].patches) == 3 * layout.num_q_blocks

    fig2 = sf.plot(layout, heads=[2])
    assert len([ax for ax in fig2.get_axes() if ax.get_label() != "<colorbar>"]) == 2
    with pytest.raises(ValueError, match="head"):
        sf.plot(layout, heads=[3])


def test_plot_without_matplotlib_hints_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    layout = sf.compile(sf.local(1), 512, block_size=64)
    with pytest.raises(ImportError, match=r"pip install 'sparseflash\[viz\]'") as info:
        sf.plot(layout)
    assert "\n" not in str(info.value)


def test_doc_pictures_are_current():
    # docs/dsl.md's pictures are generated by docs/make_pictures.py from to_string
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "docs" / "make_pictures.py"
    if not script.exists():
        pytest.skip("no docs in this tree")
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_layout_doc_examples():
    import doctest
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "docs" / "layout.md"
    if not path.exists():
        pytest.skip("no docs in this tree")
    result = doctest.testfile(str(path), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


def test_visualize_does_not_import_layout_at_module_level():
    # layout.to_string imports visualize; visualize importing layout back closed a circle
    import ast
    from pathlib import Path

    import sparseflash.visualize as visualize

    tree = ast.parse(Path(visualize.__file__).read_text())
    for node in tree.body:  # module level only; an `if TYPE_CHECKING:` block is not run
        if isinstance(node, ast.ImportFrom):
            assert node.module not in ("layout", "sparseflash.layout"), ast.dump(node)
