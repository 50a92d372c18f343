"""Pictures of a layout: an ASCII map (``BlockLayout.to_string``) and a matplotlib figure.

Both downsample the block grid the same way, through :func:`block_fraction_map`: a cell
covers ``factor x factor`` blocks and holds the fraction of them that are computed. The work
is O(nnz + cells), never O(nq * nk), so a million-token layout draws instantly.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # layout.py imports this module (lazily, in to_string): no import circle
    from matplotlib.figure import Figure

    from .layout import BlockLayout

__all__ = ["RAMP", "block_fraction_map", "layout_to_string", "plot"]

# Dark-to-light shading by computed fraction: ' ' is exactly none, '@' exactly all, and the
# eight characters between split (0, 1) into equal eighths.
RAMP = " .:-=+*#%@"


def _check_head(layout: BlockLayout, head) -> int:
    if not isinstance(head, (int, np.integer)) or not 0 <= head < layout.num_heads:
        raise ValueError(f"head must be an int in [0, {layout.num_heads}), got {head!r}")
    return int(head)


def block_fraction_map(layout: BlockLayout, head: int = 0,
                       max_cells: int = 64) -> Tuple[np.ndarray, int]:
    """Computed fraction per cell of one head's block grid, downsampled.

    Returns ``(fraction, factor)``: ``fraction`` is float ``[ceil(nq / factor), ceil(nk / factor)]``
    with values in [0, 1], and ``factor = ceil(max(nq, nk) / max_cells)`` blocks per cell side.
    Edge cells that cover fewer blocks are divided by the blocks they actually cover.
    """
    head = _check_head(layout, head)
    layout = layout.host()                 # a device-built layout's tables, copied once
    if int(max_cells) != max_cells or max_cells < 1:
        raise ValueError(f"max_cells must be a positive integer, got {max_cells!r}")
    nq, nk = layout.num_q_blocks, layout.num_kv_blocks
    factor = max(1, -(-max(nq, nk) // int(max_cells)))
    cells_q, cells_k = -(-nq // factor), -(-nk // factor)

    th = head if layout.table_heads > 1 else 0
    lo, hi = int(layout.fwd_ptr[th * nq]), int(layout.fwd_ptr[(th + 1) * nq])
    q_block = np.repeat(np.arange(nq, dtype=np.int64),
                        np.diff(layout.fwd_ptr[th * nq:(th + 1) * nq + 1]))   # [row nnz]
    k_block = layout.fwd_idx[lo:hi].astype(np.int64)                          # [row nnz]
    counts = np.bincount((q_block // factor) * cells_k + k_block // factor,
                         minlength=cells_q * cells_k).reshape(cells_q, cells_k)
    # blocks each cell covers: factor, except the last cell of an axis
    span_q = np.minimum(factor, nq - np.arange(cells_q) * factor)
    span_k = np.minimum(factor, nk - np.arange(cells_k) * factor)
    return counts / np.outer(span_q, span_k), factor


def _shade(fraction: np.ndarray) -> np.ndarray:
    levels = len(RAMP) - 2
    idx = 1 + np.minimum(levels - 1, (fraction * levels).astype(np.int64))
    idx = np.where(fraction <= 0, 0, np.where(fraction >= 1, len(RAMP) - 1, idx))
    return np.array(list(RAMP))[idx]


def layout_to_string(layout: BlockLayout, width: int = 64, head: int = 0) -> str:
    """ASCII map of one head: rows are query blocks, columns key blocks.

    A cell covers ``factor x factor`` blocks and is drawn as two equal characters (a terminal
    character is about twice as tall as wide, so cells look square), shaded by the fraction of
    its blocks computed (``RAMP``). The map is at most ``width`` characters wide inside a frame,
    with a legend line below.
    """
    if not isinstance(width, (int, np.integer)) or width < 2:
        raise ValueError(f"width must be an integer >= 2, got {width!r}")
    fraction, factor = block_fraction_map(layout, head, width // 2)
    chars = np.repeat(_shade(fraction), 2, axis=1)                # [cells_q, 2 * cells_k]
    border = "+" + "-" * chars.shape[1] + "+"
    lines = [border] + ["|" + "".join(row) + "|" for row in chars] + [border]
    cell = f"2 chars = {factor}x{factor} blocks" if factor > 1 else "2 chars = 1 block"
    lines.append(
        f"head {head}: {layout.num_q_blocks}x{layout.num_kv_blocks} blocks of {layout.block_size} "
        f"tokens, {cell}; shade = fraction computed: ' ' none, "
        f"'{RAMP[1]}'..'{RAMP[-2]}' partial, '{RAMP[-1]}' all")
    return "\n".join(lines)


def plot(layout: BlockLayout, path: Optional[str] = None,
         heads: Optional[Sequence[int]] = None, max_cells: int = 512) -> "Figure":
    """Figure of the block mask per head (downsampled) and a histogram of row density.

    Args:
        layout: the compiled layout.
        path: if given, the figure is saved there (format from the extension, e.g. ``.png``).
        heads: head indices to draw. ``None`` draws head 0 when all heads share one table,
            else up to the first 8 heads.
        max_cells: the mask images are downsampled to at most this many cells per side.

    Returns:
        The ``matplotlib.figure.Figure`` (built without pyplot, so it works headless).
    """
    try:
        from matplotlib.colors import PowerNorm
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("sparseflash.plot needs matplotlib: pip install 'sparseflash[viz]'") from None

    if heads is None:
        heads = [0] if layout.table_heads == 1 else list(range(min(layout.num_heads, 8)))
    heads = [_check_head(layout, h) for h in heads]
    if not heads:
        raise ValueError("heads must name at least one head")

    ncols = len(heads) + 1
    fig = Figure(figsize=(3.4 * ncols + 0.6, 3.9), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    # gamma < 1 keeps sparse downsampled cells visible; 1.0 is still "every block"
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    for ax, h in zip(axes, heads):
        fraction, factor = block_fraction_map(layout, h, max_cells)
        image = ax.imshow(fraction, cmap="Greys", norm=norm, interpolation="nearest",
                          extent=(0, layout.num_kv_blocks, layout.num_q_blocks, 0))
        shared = " (all heads)" if layout.table_heads == 1 and layout.num_heads > 1 else ""
        ax.set_title(f"head {h}{shared}" + (f", {factor}x{factor} blocks/px" if factor > 1 else ""),
                     fontsize=9)
        ax.set_xlabel("key block")
        ax.set_ylabel("query block")
    fig.colorbar(image, ax=axes[:-1].tolist(), shrink=0.8, label="fraction computed")

    per_row = layout.row_counts()[heads].ravel()                 # [len(heads) * nq]
    hist = axes[-1]
    hist.hist(per_row, bins=min(50, int(per_row.max(initial=0)) + 1), color="0.3")
    hist.set_yscale("log")
    hist.set_xlabel(f"key blocks per query block (of {layout.num_kv_blocks})")
    hist.set_ylabel("query blocks")
    hist.set_title("row density", fontsize=9)

    fig.suptitle(f"{layout.seq_len}x{layout.kv_len} tokens, block {layout.block_size}"
                 f"{', causal' if layout.causal else ''}, {layout.num_heads} head(s)\n"
                 f"density {layout.density:.2%}, nnz {layout.nnz:,} blocks", fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
