"""Bridges from sparseflash's tables to other attention libraries, one module each.

* :mod:`sparseflash.integrations.flex`: a :class:`~sparseflash.BlockLayout` as a PyTorch
  FlexAttention ``BlockMask`` (:func:`~sparseflash.to_flex_block_mask`).
* :mod:`sparseflash.integrations.fa4`: a layout as FlashAttention-4's block-sparse tensors,
  forward and backward (:func:`~sparseflash.to_fa4_block_sparse`).
* :mod:`sparseflash.integrations.transformers`: a Hugging Face attention implementation.
"""
from .fa4 import to_fa4_block_sparse
from .flex import to_flex_block_mask

__all__ = ["to_flex_block_mask", "to_fa4_block_sparse"]
