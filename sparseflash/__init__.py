"""sparseflash: block-sparse FlashAttention with a pattern DSL, a millisecond mask compiler,
an IO-cost estimator and Triton kernels.

The data path, one module per stage: pattern -> compiler -> layout -> kernels -> attention.
"""
from .pattern import (
    Pattern, PatternError, dense, local, strided, dilated, rows, columns, global_blocks,
    random, butterfly, fixed, bigbird, longformer, from_mask, from_fn, per_head,
)
from .layout import BlockLayout
from .compiler import compile, compile_cache_clear, compile_cache_info
from .dynamic import layout_from_block_mask, topk_layout
from .attention import sparse_attention
from .parser import parse
from .presets import load
from . import presets  # the module; calling it, ``sparseflash.presets()``, lists the presets
from .estimate import estimate, CostEstimate, DeviceProfile, DEVICES, register_device
from .visualize import plot
from .integrations.flex import to_flex_block_mask
from .integrations.fa4 import to_fa4_block_sparse
from .nn import SparseSelfAttention  # also binds the module, sparseflash.nn

__version__ = "0.1.0"

# ``from sparseflash import *`` must not shadow a builtin or a stdlib module, so ``compile``
# and ``random`` stay out of it; use them as ``sparseflash.compile`` and ``sparseflash.random``.
# ``nn`` stays out too (it would shadow ``from torch import nn``): ``sparseflash.nn``.
__all__ = [
    "Pattern", "PatternError", "dense", "local", "strided", "dilated", "rows", "columns",
    "global_blocks", "butterfly", "fixed", "bigbird", "longformer", "from_mask", "from_fn",
    "per_head", "BlockLayout", "layout_from_block_mask", "topk_layout", "compile_cache_clear", "compile_cache_info", "sparse_attention",
    "parse", "load", "presets", "estimate", "CostEstimate", "DeviceProfile", "DEVICES",
    "register_device", "plot", "to_flex_block_mask", "to_fa4_block_sparse", "SparseSelfAttention",
]
