"""Bridges from sparseflash's tables to other attention libraries, one module each.

* :mod:`sparseflash.integrations.flex`: a :class:`~sparseflash.BlockLayout` as a PyTorch
  FlexAttention ``BlockMask`` (:func:`~sparseflash.to_flex_block_mask`).
"""
from .flex import to_flex_block_mask

__all__ = ["to_flex_block_mask"]
