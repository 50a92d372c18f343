"""What the exporters share: the check that a layout holds one sequence's tables."""
from __future__ import annotations

from ..layout import BlockLayout


def check_one_sequence(layout: BlockLayout, holder: str) -> None:
    """Raise unless ``layout`` is a BlockLayout of one sequence (``holder``: what needs it,
    e.g. "a Flex BlockMask holds")."""
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"layout must be a sparseflash BlockLayout, got {type(layout).__name__}")
    if layout.packed or layout.num_seqs != 1:
        kind = "packed documents" if layout.packed else "per-batch tables"
        raise ValueError(f"layout: {holder} one sequence's tables; this layout has "
                         f"{layout.num_seqs} sequences ({kind}). Export the layout of one sequence "
                         f"(sparseflash.compile) instead")
