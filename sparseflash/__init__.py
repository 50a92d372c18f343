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

__version__ = "0.1.0"
